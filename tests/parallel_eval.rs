//! `tiw generate` and `tiw fid` under a launcher (`tiw launch`, Gloo on 127.0.0.1): 2 ranks
//! write exactly the PNGs of one process (each rank its share of the seeds, split as
//! generate.py splits them), and FID statistics computed on 2 ranks (each its share of the
//! images, f64 sums added over ranks) equal one process's.

mod common;

use std::path::Path;
use std::process::Command;

use common::tolerances::TOL_FID_WORLD_REL;
use common::{fixture, ok, s};

fn tiw() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tiw"))
}

fn pngs(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "png"))
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read(&p).unwrap(),
            )
        })
        .collect();
    v.sort();
    v
}

fn generate(outdir: &Path, launch: bool) {
    let mut c = tiw();
    if launch {
        c.args(["launch", "--nproc-per-node", "2", "--"]);
    }
    c.args([
        "generate",
        "--network",
        &s(&fixture("nets/edm_ddpmpp_r16_uncond/network-snapshot-000000.pkl")),
        "--outdir",
        &s(outdir),
        "--seeds",
        "0-6",
        "--batch",
        "2",
        "--steps",
        "4",
        "--runtime",
        "tch",
        "--quiet",
    ]);
    ok(c.output().unwrap(), "generate");
}

#[test]
fn generate_on_two_ranks_writes_the_one_process_pngs() {
    let d = tempfile::tempdir().unwrap();
    let (one, two) = (d.path().join("one"), d.path().join("two"));
    generate(&one, false);
    generate(&two, true);
    let (a, b) = (pngs(&one), pngs(&two));
    assert_eq!(a.len(), 7);
    assert_eq!(a, b, "2-rank PNGs differ from the 1-process PNGs");
    println!("{} PNGs byte-identical between 1 process and 2 ranks", a.len());
}

fn read_stats(p: &Path) -> (f64, Vec<f64>, Vec<f64>) {
    let a = tiw::npz::read(p).unwrap();
    let get = |k: &str| tiw::npz::get(&a, k, p).unwrap().to_f64();
    (get("n")[0], get("sum"), get("sum_outer"))
}

#[test]
fn fid_stats_on_two_ranks_equal_one_process() {
    let Some(w) = common::inception_weights() else {
        return;
    };
    let d = tempfile::tempdir().unwrap();
    let imgs = d.path().join("imgs");
    generate(&imgs, false);
    let stats = |dest: &Path, launch: bool| {
        let mut c = tiw();
        if launch {
            c.args(["launch", "--nproc-per-node", "2", "--"]);
        }
        c.args([
            "fid",
            "stats",
            "--images",
            &s(&imgs),
            "--dest",
            &s(dest),
            "--detector",
            &s(&w),
            "--batch",
            "2",
            "--quiet",
        ]);
        ok(c.output().unwrap(), "fid stats");
    };
    let (one, two) = (d.path().join("one.npz"), d.path().join("two.npz"));
    stats(&one, false);
    stats(&two, true);
    let (n1, s1, o1) = read_stats(&one);
    let (n2, s2, o2) = read_stats(&two);
    assert_eq!(n1, 7.0);
    assert_eq!(n1, n2);
    let (es, eo) = (tiw::parity::norm_err(&s2, &s1), tiw::parity::norm_err(&o2, &o1));
    println!(
        "fid stats 2 ranks vs 1: Σf {es:.2e}, Σffᵀ {eo:.2e} (relative; tolerance {TOL_FID_WORLD_REL:e})"
    );
    assert!(es <= TOL_FID_WORLD_REL && eo <= TOL_FID_WORLD_REL);
}
