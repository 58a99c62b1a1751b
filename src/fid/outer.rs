//! `S = Σ f fᵀ` in f64 with libtorch's matrix products (MKL's DGEMM, AVX-512 where the CPU
//! has it; faster than faer's portable AVX2 kernels and than EDM's full `x.T @ x` on the
//! benchmark machine, see docs/BENCHMARKS.md).
//!
//! Only the lower triangle is computed, by block rows: the columns are split into blocks of
//! [`COL_BLOCK`] and `S[I, ..end(I)] += P[:, I]ᵀ P[:, ..end(I)]` (for D = 2048: 136 of 256
//! blocks, 53 % of the full `Pᵀ P`). The feature rows are read in place: `P[:, I]` is a
//! strided view that BLAS takes as a transposed operand, so no copy of `P` is made. Every
//! product of f32 features is exact in f64; only the summation order differs from EDM's
//! `sigma += x.T @ x`.

use tch::{Device, Kind, Tensor};

/// Column block of the triangular update.
pub const COL_BLOCK: usize = 128;

/// A symmetric `d × d` accumulator of outer products (lower triangle valid).
pub struct OuterSum {
    d: usize,
    s: Tensor,
}

impl OuterSum {
    /// `S = 0`.
    pub fn new(d: usize) -> Self {
        OuterSum {
            d,
            s: Tensor::zeros([d as i64, d as i64], (Kind::Double, Device::Cpu)),
        }
    }

    /// `S` from a full row-major symmetric matrix.
    pub fn from_row_major(d: usize, full: &[f64]) -> Self {
        assert_eq!(full.len(), d * d);
        OuterSum {
            d,
            s: Tensor::from_slice(full).reshape([d as i64, d as i64]),
        }
    }

    /// `S += Pᵀ P` for a row-major `rows × d` f64 block `P`: for each column block `I`,
    /// `S[I, ..end(I)] += P[:, I]ᵀ P[:, ..end(I)]` (the lower-triangle blocks, one product
    /// per block row).
    pub fn add_rows(&mut self, p: &[f64]) {
        let d = self.d.max(1);
        assert_eq!(p.len() % d, 0);
        let rows = (p.len() / d) as i64;
        if rows == 0 {
            return;
        }
        // P viewed in place (no copy): its column block `I` is the strided matrix `P[:, I]`,
        // which BLAS takes as a transposed operand with leading dimension `d`.
        // SAFETY: the view lives only inside this function, while `p` is borrowed immutably,
        // and libtorch only reads it (it is an input of `addmm_`).
        let pm = unsafe {
            Tensor::from_blob(
                p.as_ptr() as *const u8,
                &[rows, d as i64],
                &[d as i64, 1],
                Kind::Double,
                Device::Cpu,
            )
        };
        for si in (0..self.d).step_by(COL_BLOCK) {
            let li = COL_BLOCK.min(self.d - si) as i64;
            let end = si as i64 + li;
            let mut block = self.s.narrow(0, si as i64, li).narrow(1, 0, end);
            let _ = block.addmm_(&pm.narrow(1, si as i64, li).tr(), &pm.narrow(1, 0, end));
        }
    }

    /// `S += T` (lower triangles; the whole matrices are added).
    pub fn add(&mut self, other: &OuterSum) {
        assert_eq!(self.d, other.d);
        let _ = self.s.g_add_(&other.s);
    }

    /// `S` as a full row-major symmetric matrix (the lower triangle mirrored).
    pub fn to_row_major(&self) -> Vec<f64> {
        let lower = self.s.tril(0);
        let full = &lower + lower.tril(-1).tr();
        Vec::<f64>::try_from(full.contiguous().reshape([-1])).expect("a CPU f64 tensor")
    }
}
