//! The one input-validation and batching driver of [`super::Network`].
//!
//! A network declares each input as an [`InputSpec`]: a shape whose leading dimension is the
//! batch `N` (dims fixed, or free), whether it may be omitted (then, for graphs that need
//! every input, zeros of the declared width are fed) and whether a scalar (shape `[]` or
//! `[1]`) stands for the whole batch. [`check`] validates given arrays against the
//! declarations with one error style (`SOURCE: NAME has shape [..]; this network takes
//! (N, 3, 16, 16)`) and returns `N`; [`run_batched`] splits every batch-leading input into
//! chunks of at most `batch` rows (scalars go whole to every chunk), runs them in order and
//! concatenates the outputs along dimension 0.

use anyhow::{bail, Result};

use super::{NamedArray, OnnxGraph};

/// One dimension of a declared input shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dim {
    /// The batch dimension `N` (the same for every input of a call).
    Batch,
    /// A fixed size.
    Fixed(usize),
    /// Any size.
    Any,
}

/// A declared network input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputSpec {
    /// Input name.
    pub name: String,
    /// Shape; the first entry is [`Dim::Batch`] for batched inputs.
    pub dims: Vec<Dim>,
    /// Whether a call may omit it.
    pub optional: bool,
    /// Whether a scalar (shape `[]` or `[1]`) is accepted for the whole batch.
    pub scalar_ok: bool,
}

impl InputSpec {
    /// A required input of shape `dims`.
    pub fn required(name: &str, dims: Vec<Dim>) -> Self {
        InputSpec {
            name: name.into(),
            dims,
            optional: false,
            scalar_ok: false,
        }
    }

    /// An optional input of shape `dims`.
    pub fn optional(name: &str, dims: Vec<Dim>) -> Self {
        InputSpec {
            optional: true,
            ..Self::required(name, dims)
        }
    }

    /// The same input, also accepting a scalar for the whole batch.
    pub fn or_scalar(mut self) -> Self {
        self.scalar_ok = true;
        self
    }

    /// The shape as messages write it: `(N, 3, 16, 16)`, `(N,)` or a scalar.
    pub fn expected(&self) -> String {
        let d: Vec<String> = self
            .dims
            .iter()
            .enumerate()
            .map(|(i, d)| match d {
                Dim::Batch => "N".to_string(),
                Dim::Fixed(v) => v.to_string(),
                Dim::Any => ["C", "H", "W", "D"]
                    .get(i.saturating_sub(1))
                    .unwrap_or(&"?")
                    .to_string(),
            })
            .collect();
        let shape = if d.len() == 1 {
            format!("({},)", d[0])
        } else {
            format!("({})", d.join(", "))
        };
        if self.scalar_ok {
            format!("{shape} or a scalar")
        } else {
            shape
        }
    }

    /// Width of a `(N, W)` input, if fixed.
    pub fn width(&self) -> Option<usize> {
        match self.dims.as_slice() {
            [Dim::Batch, Dim::Fixed(w)] => Some(*w),
            _ => None,
        }
    }

    fn is_scalar(&self, a: &NamedArray) -> bool {
        self.scalar_ok && (a.shape.is_empty() || a.shape == [1])
    }
}

/// Checks `inputs` against `specs` (names, presence, shapes, value counts); `source` labels
/// the messages (the input file). Returns the batch size `N`.
pub fn check(specs: &[InputSpec], inputs: &[NamedArray], source: &str) -> Result<usize> {
    for a in inputs {
        if !specs.iter().any(|s| s.name == a.name) {
            let names: Vec<&str> = specs.iter().map(|s| s.name.as_str()).collect();
            bail!(
                "{source}: {:?} is not an input of this network (inputs: {})",
                a.name,
                names.join(", ")
            );
        }
        if a.data.len() != a.shape.iter().product::<usize>() {
            bail!(
                "{source}: {} has {} values for shape {:?}",
                a.name,
                a.data.len(),
                a.shape
            );
        }
    }
    let mut n: Option<usize> = None;
    for s in specs {
        let Some(a) = inputs.iter().find(|a| a.name == s.name) else {
            if s.optional {
                continue;
            }
            bail!(
                "{source}: no input {:?} (this network takes {})",
                s.name,
                s.expected()
            );
        };
        if s.is_scalar(a) {
            continue;
        }
        let batch = s.dims.first() == Some(&Dim::Batch);
        let fits = a.shape.len() == s.dims.len()
            && s.dims.iter().zip(&a.shape).all(|(d, &v)| match d {
                Dim::Batch => n.is_none_or(|n| n == v),
                Dim::Fixed(f) => *f == v,
                Dim::Any => true,
            });
        if !fits {
            let want = match n {
                Some(n) if batch => s.expected().replacen('N', &n.to_string(), 1),
                _ => s.expected(),
            };
            bail!(
                "{source}: {} has shape {:?}; this network takes {want}",
                s.name,
                a.shape
            );
        }
        if batch && n.is_none() {
            n = Some(a.shape[0]);
        }
    }
    n.ok_or_else(|| anyhow::anyhow!("{source}: no batched input"))
}

/// Adds zeros for omitted optional inputs of fixed width (`(N, W)`), and expands scalars to
/// `(N,)`: what a graph that needs every input at full size gets.
pub fn complete(specs: &[InputSpec], mut inputs: Vec<NamedArray>, n: usize) -> Vec<NamedArray> {
    let mut out = Vec::with_capacity(specs.len());
    for s in specs {
        match inputs
            .iter()
            .position(|a| a.name == s.name)
            .map(|i| inputs.swap_remove(i))
        {
            Some(a) if s.is_scalar(&a) && s.dims.len() == 1 => {
                out.push(NamedArray::new(&s.name, vec![n], vec![a.data[0]; n]))
            }
            Some(a) => out.push(a),
            None => {
                if let Some(w) = s.width() {
                    out.push(NamedArray::new(&s.name, vec![n, w], vec![0.0; n * w]));
                }
            }
        }
    }
    out
}

/// Splits `0..n` into `(start, len)` chunks of at most `batch` (all of it when `None`).
pub fn chunks(n: usize, batch: Option<usize>) -> Vec<(usize, usize)> {
    let b = batch.unwrap_or(n).max(1);
    (0..n).step_by(b).map(|s| (s, b.min(n - s))).collect()
}

/// Rows `s..s+len` of `a` if its leading dimension is `n`; else `a` whole (a scalar).
fn rows(a: &NamedArray, n: usize, s: usize, len: usize) -> NamedArray {
    if a.shape.first() != Some(&n) || (s == 0 && len == n) {
        return a.clone();
    }
    let per: usize = a.shape[1..].iter().product();
    let mut shape = a.shape.clone();
    shape[0] = len;
    NamedArray::new(&a.name, shape, a.data[s * per..(s + len) * per].to_vec())
}

/// Runs `g` on `inputs` (batch size `n`) in chunks of at most `batch` and concatenates the
/// outputs along dimension 0.
pub fn run_batched(
    g: &mut dyn OnnxGraph,
    inputs: &[NamedArray],
    n: usize,
    batch: Option<usize>,
) -> Result<Vec<NamedArray>> {
    let parts = chunks(n, batch);
    if parts.len() <= 1 {
        return g.run(inputs);
    }
    let mut outs: Vec<NamedArray> = Vec::new();
    for (s, len) in parts {
        let part: Vec<NamedArray> = inputs.iter().map(|a| rows(a, n, s, len)).collect();
        let r = g.run(&part)?;
        if outs.is_empty() {
            outs = r;
            continue;
        }
        for (o, x) in outs.iter_mut().zip(r) {
            if o.shape.is_empty() || x.shape.is_empty() || o.shape[1..] != x.shape[1..] {
                bail!("output {} changes shape between batches", o.name);
            }
            o.shape[0] += x.shape[0];
            o.data.extend(x.data);
        }
    }
    Ok(outs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arr(name: &str, shape: Vec<usize>) -> NamedArray {
        let len = shape.iter().product();
        NamedArray::new(name, shape, vec![0.0; len])
    }

    #[test]
    fn checks_shapes_in_one_style() {
        let specs = vec![
            InputSpec::required(
                "x",
                vec![Dim::Batch, Dim::Fixed(3), Dim::Fixed(16), Dim::Fixed(16)],
            ),
            InputSpec::required("sigma", vec![Dim::Batch]).or_scalar(),
            InputSpec::optional("class_labels", vec![Dim::Batch, Dim::Fixed(10)]),
        ];
        let x = arr("x", vec![2, 3, 16, 16]);
        assert_eq!(check(&specs, &[x.clone(), arr("sigma", vec![])], "f").unwrap(), 2);
        assert_eq!(
            check(&specs, &[x.clone(), arr("sigma", vec![2])], "f").unwrap(),
            2
        );
        let e = check(
            &specs,
            &[arr("x", vec![3, 3, 8, 8]), arr("sigma", vec![3])],
            "f.npz",
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "f.npz: x has shape [3, 3, 8, 8]; this network takes (N, 3, 16, 16)"
        );
        let e = check(&specs, &[x.clone(), arr("sigma", vec![3])], "f").unwrap_err();
        assert!(
            e.to_string()
                .contains("sigma has shape [3]; this network takes (2,) or a scalar"),
            "{e}"
        );
        let e = check(
            &specs,
            &[x.clone(), arr("sigma", vec![2]), arr("class_labels", vec![2, 9])],
            "f",
        )
        .unwrap_err();
        assert!(e.to_string().contains("(2, 10)"), "{e}");
        assert!(check(&specs, std::slice::from_ref(&x), "f")
            .unwrap_err()
            .to_string()
            .contains("no input \"sigma\""));
        assert!(check(&specs, &[x, arr("sigma", vec![2]), arr("t", vec![2])], "f")
            .unwrap_err()
            .to_string()
            .contains("not an input"));
        let full = complete(
            &specs,
            vec![arr("x", vec![2, 3, 16, 16]), arr("sigma", vec![1])],
            2,
        );
        assert_eq!(full[1].shape, vec![2]);
        assert_eq!(full[2].shape, vec![2, 10]);
    }

    #[test]
    fn chunks_cover_the_batch() {
        assert_eq!(chunks(5, Some(2)), vec![(0, 2), (2, 2), (4, 1)]);
        assert_eq!(chunks(3, None), vec![(0, 3)]);
        let a = NamedArray::new("x", vec![3, 2], (0..6).map(|v| v as f32).collect());
        assert_eq!(rows(&a, 3, 1, 2).data, vec![2.0, 3.0, 4.0, 5.0]);
        let s = NamedArray::new("sigma", vec![1], vec![7.0]);
        assert_eq!(rows(&s, 3, 1, 2).shape, vec![1]);
    }
}
