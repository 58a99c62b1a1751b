//! The one runtime layer (`tiw::runtime::Network`): the same input check, with the same
//! message, on tch, ort and tract; inputs split into batches (per-sample and scalar σ) give
//! the fixture's outputs on every runtime.

mod common;

use common::tolerances::TOL_VS_FIXTURE;
use common::{arr, fixture, read_npz};
use tiw::device::DeviceSpec;
use tiw::parity::norm_err;
use tiw::runtime::{Backend, NamedArray, NetKind, Network, Runtime};

fn named(name: &str, a: &tiw::npz::Array) -> NamedArray {
    NamedArray::new(name, a.shape.clone(), a.to_f32())
}

#[test]
fn one_input_check_and_batching_on_every_runtime() {
    let net = fixture("nets/vp_ddpmpp_r8_uncond/network-snapshot-000000.pkl");
    let f = read_npz(&fixture("nets/vp_ddpmpp_r8_uncond/forward.npz"));
    for rt in [Runtime::Tch, Runtime::Ort, Runtime::Tract] {
        let mut n = Network::load(NetKind::Denoiser, &net, Backend::new(rt, DeviceSpec::Cpu), None)
            .unwrap_or_else(|e| panic!("{rt:?}: {e:#}"));
        // one error style, before any runtime sees the arrays
        let bad = NamedArray::new("x", vec![2, 3, 4, 4], vec![0.0; 2 * 3 * 16]);
        let sigma = NamedArray::new("sigma", vec![], vec![1.0]);
        let e = n
            .run(vec![bad, sigma.clone()], "in.npz", None)
            .unwrap_err()
            .to_string();
        println!("{rt:?}: {e}");
        assert_eq!(
            e,
            "in.npz: x has shape [2, 3, 4, 4]; this network takes (N, 3, 8, 8)"
        );
        let x = named("x", arr(&f, "x"));
        let e = n
            .run(
                vec![x.clone(), NamedArray::new("sigma", vec![2], vec![1.0; 2])],
                "in.npz",
                None,
            )
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "in.npz: sigma has shape [2]; this network takes (3,) or a scalar"
        );
        let e = n.run(vec![x.clone()], "in.npz", None).unwrap_err().to_string();
        assert!(e.contains("no input \"sigma\""), "{e}");
        // batches of 2 (3 samples): per-sample σ, and one σ for the batch
        for (sig, want) in [("sigma", "D"), ("sigma_scalar", "D_scalar_sigma")] {
            let out = n
                .run(
                    vec![x.clone(), named("sigma", arr(&f, sig))],
                    "forward.npz",
                    Some(2),
                )
                .unwrap_or_else(|e| panic!("{rt:?}: {e:#}"));
            assert_eq!(out[0].name, "D");
            assert_eq!(out[0].shape, vec![3, 3, 8, 8]);
            let err = norm_err(&out[0].data, &arr(&f, want).to_f32());
            println!("{rt:?} {want} in batches of 2 vs fixture: {err:.2e}");
            assert!(err <= TOL_VS_FIXTURE, "{rt:?} {want}: {err}");
        }
    }
}
