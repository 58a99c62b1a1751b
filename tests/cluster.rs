//! Runs that survive the cluster (issue 20): a stop signal ends `tiw train` and
//! `tiw train-classifier` after the current step with a training state, `--resume auto`
//! continues bit-exactly; a second signal aborts and leaves the previous state valid; under
//! `tiw launch` both ranks stop at the same step; a failing checkpoint write (injected full
//! disk) is a clear error that keeps the previous state; a dataset of huge images is
//! refused from its PNG headers.
//!
//! Every wait is bounded (`WAIT`), and a child that outlives it is killed.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::runs::TinyRun;
use common::{fixture, ok, s};

const WAIT: Duration = Duration::from_secs(240);

fn tiw() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tiw-full"))
}

fn launch(n: usize) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_tiw"));
    c.args(["launch", "--nproc-per-node", &n.to_string(), "--"]);
    c
}

/// The shared tiny EDM run for `steps` steps under `outdir`, a state every 2 ticks and a
/// snapshot every 3, then `extra`.
fn train_args(outdir: &Path, steps: usize, extra: &[&str]) -> Vec<String> {
    TinyRun::train(outdir)
        .steps(steps)
        .set("--snap", "3")
        .set("--dump", "2")
        .args_with(extra)
}

/// The only run directory under `outdir`.
fn run_dir(outdir: &Path) -> PathBuf {
    let dirs: Vec<PathBuf> = std::fs::read_dir(outdir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    assert_eq!(dirs.len(), 1, "{dirs:?}");
    dirs[0].clone()
}

fn states(dir: &Path) -> Vec<PathBuf> {
    tiw::train::checkpoint::states_newest_first(dir).unwrap_or_default()
}

/// Every tensor of a safetensors file, by name (bytes).
fn tensors(p: &Path) -> Vec<(String, Vec<u8>)> {
    let buf = tiw_converters::Buffer::open(p).unwrap();
    let (store, _) = tiw_converters::safetensors_io::read(std::sync::Arc::new(buf)).unwrap();
    let mut v: Vec<(String, Vec<u8>)> = store
        .entries()
        .iter()
        .map(|e| (e.name.clone(), store.bytes(e).into_owned()))
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

fn assert_same_tensors(a: &Path, b: &Path) {
    let (ta, tb) = (tensors(a), tensors(b));
    assert_eq!(ta.len(), tb.len());
    for ((na, xa), (nb, xb)) in ta.iter().zip(&tb) {
        assert_eq!(na, nb);
        assert!(
            xa == xb,
            "{na} differs between {} and {}",
            a.display(),
            b.display()
        );
    }
}

fn cur_nimg(state: &Path) -> u64 {
    tiw::train::checkpoint::read_state(state, tch::Device::Cpu)
        .unwrap()
        .progress
        .cur_nimg
}

/// Polls `cond` every 20 ms; false after `WAIT` or when `child` exits first.
fn wait_until(child: &mut Child, mut cond: impl FnMut() -> bool) -> bool {
    let t0 = Instant::now();
    while t0.elapsed() < WAIT {
        if cond() {
            return true;
        }
        if child.try_wait().unwrap().is_some() {
            return cond();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// Waits for `child` (killed after `WAIT`); its output and the seconds it took.
fn finish(mut child: Child) -> (Output, f64) {
    let t0 = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if t0.elapsed() > WAIT {
            let _ = child.kill();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let secs = t0.elapsed().as_secs_f64();
    (child.wait_with_output().unwrap(), secs)
}

fn signal(child: &Child, sig: i32) {
    // SAFETY: kill(2) on our own child that has not been reaped.
    assert_eq!(unsafe { libc::kill(child.id() as i32, sig) }, 0);
}

fn spawn(mut c: Command) -> Child {
    c.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap()
}

/// The step named in the log's "SIGTERM received: stopping after step N".
fn stop_step(log: &str) -> u64 {
    let i = log.find("stopping after step ").expect("no stop line in the log");
    let rest = &log[i + "stopping after step ".len()..];
    rest.split_whitespace().next().unwrap().parse().unwrap()
}

#[test]
fn sigterm_stops_training_and_resume_auto_matches() {
    let d = tempfile::tempdir().unwrap();
    let (straight, stopped) = (d.path().join("straight"), d.path().join("stopped"));
    let steps = 40;
    ok(
        tiw().args(train_args(&straight, steps, &[])).output().unwrap(),
        "straight run",
    );

    let mut child = spawn({
        let mut c = tiw();
        c.args(train_args(&stopped, steps, &[]));
        c
    });
    let has_state = wait_until(&mut child, || {
        std::fs::read_dir(&stopped).is_ok_and(|mut r| r.next().is_some())
            && !states(&run_dir(&stopped)).is_empty()
    });
    assert!(has_state, "no training state appeared");
    signal(&child, libc::SIGTERM);
    let (out, secs) = finish(child);
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    println!("SIGTERM → exit in {secs:.2} s");
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("Stopped by SIGTERM") && err.contains("--resume auto"),
        "{err}"
    );
    assert!(secs < 60.0, "took {secs} s to stop");
    let dir = run_dir(&stopped);
    let log = std::fs::read_to_string(dir.join("log.txt")).unwrap();
    let step = stop_step(&log);
    assert!(step < steps as u64, "the run finished before the signal: {log}");
    assert_eq!(
        cur_nimg(&states(&dir)[0]),
        step * 4,
        "the state is not at the stop step"
    );

    let err = ok(
        tiw()
            .args(train_args(&stopped, steps, &["--resume", "auto"]))
            .output()
            .unwrap(),
        "resume auto",
    );
    let log = std::fs::read_to_string(dir.join("log.txt")).unwrap();
    assert!(log.contains("--resume auto: continuing from"), "{log}\n{err}");
    assert_eq!(run_dir(&stopped), dir, "resume auto made a new run directory");
    assert_same_tensors(&states(&dir)[0], &states(&run_dir(&straight))[0]);
}

#[test]
fn second_signal_aborts_and_keeps_the_previous_state() {
    let d = tempfile::tempdir().unwrap();
    let out_dir = d.path().join("runs");
    let mut c = tiw();
    // every checkpoint write pauses 1.5 s before its rename: the second signal lands inside
    c.args(train_args(&out_dir, 40, &[]))
        .env("TIW_FAULT_WRITE_DELAY_MS", "1500");
    let mut child = spawn(c);
    assert!(wait_until(&mut child, || {
        std::fs::read_dir(&out_dir).is_ok_and(|mut r| r.next().is_some())
            && !states(&run_dir(&out_dir)).is_empty()
    }));
    let dir = run_dir(&out_dir);
    let before = cur_nimg(&states(&dir)[0]);
    signal(&child, libc::SIGTERM);
    assert!(wait_until(&mut child, || std::fs::read_to_string(
        dir.join("log.txt")
    )
    .is_ok_and(|l| l.contains("SIGTERM received"))));
    std::thread::sleep(Duration::from_millis(300));
    signal(&child, libc::SIGTERM);
    let (out, secs) = finish(child);
    println!("second SIGTERM → exit {:?} in {secs:.2} s", out.status.code());
    assert!(!out.status.success(), "a second signal must abort");
    assert!(secs < 5.0, "the abort took {secs} s");
    for st in states(&dir) {
        assert!(
            tiw::train::checkpoint::state_is_readable(&st),
            "{} is broken",
            st.display()
        );
    }
    assert_eq!(
        cur_nimg(&states(&dir)[0]),
        before,
        "the previous state was replaced"
    );
}

fn classifier_args(savedir: &Path, iters: u64, extra: &[&str]) -> Vec<String> {
    TinyRun::classifier(savedir, iters).args_with(extra)
}

fn next_iter(state: &Path) -> u64 {
    let buf = tiw_converters::Buffer::open(state).unwrap();
    let (_, meta) = tiw_converters::safetensors_io::read(std::sync::Arc::new(buf)).unwrap();
    let v: serde_json::Value = serde_json::from_str(&meta["tiw.train_state"]).unwrap();
    v["next_iter"].as_u64().unwrap()
}

#[test]
fn sigterm_stops_train_classifier_and_resume_auto_matches() {
    let d = tempfile::tempdir().unwrap();
    let (straight, stopped) = (d.path().join("straight"), d.path().join("stopped"));
    let iters = 30;
    let run = |dir: &Path, extra: &[&str]| {
        let mut c = tiw();
        c.args(classifier_args(dir, iters, extra))
            .env("OMP_NUM_THREADS", "1");
        c
    };
    ok(run(&straight, &[]).output().unwrap(), "straight");
    let mut child = spawn(run(&stopped, &[]));
    let state = stopped.join("training-state.safetensors");
    assert!(wait_until(&mut child, || state.exists()));
    signal(&child, libc::SIGTERM);
    let (out, secs) = finish(child);
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    println!("train-classifier: SIGTERM → exit in {secs:.2} s");
    assert!(out.status.success(), "{err}");
    let i = err.find("Stopped by SIGTERM after iteration ").expect(&err);
    let at: u64 = err[i + 35..].split(';').next().unwrap().parse().unwrap();
    assert!(at < iters, "finished before the signal");
    assert!(err.contains("--resume auto"), "{err}");
    assert_eq!(next_iter(&state), at);
    let err = ok(
        run(&stopped, &["--resume", "auto"]).output().unwrap(),
        "resume auto",
    );
    assert!(err.contains("--resume auto: continuing from"), "{err}");
    assert_same_tensors(&state, &straight.join("training-state.safetensors"));
    assert_eq!(
        std::fs::read(stopped.join("discriminator_21.pt")).unwrap(),
        std::fs::read(straight.join("discriminator_21.pt")).unwrap()
    );
}

#[test]
fn sigterm_to_launcher_stops_both_ranks_at_one_step() {
    let d = tempfile::tempdir().unwrap();
    let (straight, stopped) = (d.path().join("straight"), d.path().join("stopped"));
    let steps = 30;
    let extra = ["--dist-timeout", "60"];
    ok(
        launch(2)
            .args(train_args(&straight, steps, &extra))
            .output()
            .unwrap(),
        "2 ranks",
    );
    let mut child = spawn({
        let mut c = launch(2);
        c.args(train_args(&stopped, steps, &extra));
        c
    });
    assert!(wait_until(&mut child, || {
        std::fs::read_dir(&stopped).is_ok_and(|mut r| r.next().is_some())
            && !states(&run_dir(&stopped)).is_empty()
    }));
    signal(&child, libc::SIGTERM);
    let (out, secs) = finish(child);
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    println!("2 ranks: SIGTERM to the launcher → exit in {secs:.2} s");
    assert!(out.status.success(), "{err}");
    assert!(err.contains("every rank stopped cleanly"), "{err}");
    assert!(!err.contains("[rank 1] Error"), "{err}");
    let dir = run_dir(&stopped);
    let log = std::fs::read_to_string(dir.join("log.txt")).unwrap();
    assert_eq!(log.matches("received: stopping after step").count(), 1, "{log}");
    let step = stop_step(&log);
    assert!(step < steps as u64);
    assert_eq!(cur_nimg(&states(&dir)[0]), step * 4);
    ok(
        launch(2)
            .args(train_args(
                &stopped,
                steps,
                &["--dist-timeout", "60", "--resume", "auto"],
            ))
            .output()
            .unwrap(),
        "2 ranks, resume auto",
    );
    assert_same_tensors(&states(&dir)[0], &states(&run_dir(&straight))[0]);
}

#[test]
fn full_disk_keeps_the_previous_state_and_resume_auto_works() {
    let d = tempfile::tempdir().unwrap();
    let out_dir = d.path().join("runs");
    ok(
        tiw()
            .args(train_args(&out_dir, 20, &["--stop-kimg", "0.02"]))
            .output()
            .unwrap(),
        "first part",
    );
    let dir = run_dir(&out_dir);
    let state = states(&dir)[0].clone();
    assert_eq!(cur_nimg(&state), 20);
    let out = tiw()
        .args(train_args(&out_dir, 20, &["--resume", "auto"]))
        .env("TIW_FAULT_WRITE_AFTER_BYTES", "4096")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    println!("{err}");
    assert!(!out.status.success());
    assert!(!err.contains("panicked"), "{err}");
    for needle in [
        "no space left",
        "needs",
        "free on its filesystem",
        "--resume auto",
        ".safetensors",
    ] {
        assert!(err.contains(needle), "{needle:?} missing in:\n{err}");
    }
    assert_eq!(cur_nimg(&state), 20, "the previous state changed");
    let leftovers: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .filter(|n| n.starts_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
    ok(
        tiw()
            .args(train_args(&out_dir, 20, &["--resume", "auto"]))
            .output()
            .unwrap(),
        "resume after freeing space",
    );
    assert_eq!(run_dir(&out_dir), dir);
    assert_eq!(cur_nimg(&states(&dir)[0]), 80);
}

/// A folder of `n` random `res`×`res` RGB PNGs.
fn png_folder(dir: &Path, res: u32, n: usize) {
    std::fs::create_dir_all(dir).unwrap();
    let mut x: u32 = 12345;
    for i in 0..n {
        let img = image::RgbImage::from_fn(res, res, |_, _| {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            image::Rgb([(x >> 24) as u8, (x >> 16) as u8, (x >> 8) as u8])
        });
        img.save(dir.join(format!("img{i:03}.png"))).unwrap();
    }
}

/// A number in GB after `key` in `log`.
fn gb_after(log: &str, key: &str) -> f64 {
    let i = log.find(key).unwrap_or_else(|| panic!("{key:?} not in:\n{log}"));
    log[i + key.len()..]
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn memory_estimate_tracks_measured_peaks() {
    let d = tempfile::tempdir().unwrap();
    let data = d.path().join("d32");
    png_folder(&data, 32, 8);
    let data16 = d.path().join("d16");
    png_folder(&data16, 16, 8);
    println!("| res | cbase | cres | blocks | batch-gpu | estimate GB | VmHWM GB | ratio |");
    // the last row is the demo's score network at the demo's batch (src/demo/run.rs)
    for (k, (res, cbase, cres, nb, bg)) in [
        (32, 16, "1,2", "1", 4),
        (32, 32, "1,2", "2", 16),
        (32, 32, "1,2,2", "2", 32),
        (16, 16, "1,2", "1", 64),
    ]
    .into_iter()
    .enumerate()
    {
        let data = if res == 16 { &data16 } else { &data };
        let out_dir = d.path().join(format!("run{k}"));
        let bg_s = bg.to_string();
        let out = tiw()
            .args([
                "train",
                "--data",
                &s(data),
                "--outdir",
                &s(&out_dir),
                "--precond",
                "edm",
                "--cbase",
                &cbase.to_string(),
                "--cres",
                cres,
                "--num-blocks",
                nb,
                "--attn",
                "none",
                "--batch",
                &bg_s,
                "--batch-gpu",
                &bg_s,
                "--duration",
                &format!("{}", 2.0 * bg as f64 / 1e6),
                "--augment",
                "0",
                "--dropout",
                "0",
                "--tick",
                "1",
                "--threads",
                "2",
                "--quiet",
            ])
            .output()
            .unwrap();
        let err = ok(out, "memory run");
        let (est, peak) = (gb_after(&err, "estimated peak "), gb_after(&err, "(VmHWM): "));
        println!(
            "| {res} | {cbase} | {cres} | {nb} | {bg} | {est:.2} | {peak:.2} | {:.2} |",
            est / peak
        );
        assert!(
            (est / peak - 1.0).abs() <= 0.3,
            "estimate {est} GB vs measured {peak} GB"
        );
    }
}

#[test]
fn huge_dataset_images_fail_fast_with_little_memory() {
    use std::io::Write;
    let d = tempfile::tempdir().unwrap();
    let png = d.path().join("big.png");
    image::RgbImage::new(4096, 4096).save(&png).unwrap();
    let zip_path = d.path().join("dataset.zip");
    let mut z = zip::ZipWriter::new(std::fs::File::create(&zip_path).unwrap());
    z.start_file("00000/img00000000.png", zip::write::SimpleFileOptions::default())
        .unwrap();
    z.write_all(&std::fs::read(&png).unwrap()).unwrap();
    z.finish().unwrap();
    let mut c = tiw();
    c.args([
        "train",
        "--data",
        &s(&zip_path),
        "--outdir",
        &s(&d.path().join("runs")),
        "--precond",
        "edm",
        "--cbase",
        "16",
        "--cres",
        "1,2",
        "--batch",
        "2",
        "--quiet",
    ]);
    let t0 = Instant::now();
    let child = spawn(c);
    let status = format!("/proc/{}/status", child.id());
    let mut peak_kb = 0u64;
    let mut child = child;
    while child.try_wait().unwrap().is_none() && t0.elapsed() < Duration::from_secs(60) {
        if let Ok(st) = std::fs::read_to_string(&status) {
            if let Some(l) = st.lines().find(|l| l.starts_with("VmHWM:")) {
                peak_kb = peak_kb.max(l.split_whitespace().nth(1).unwrap().parse().unwrap());
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let (out, _) = finish(child);
    let secs = t0.elapsed().as_secs_f64();
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    println!(
        "4096² dataset: failed after {secs:.1} s, peak RSS {:.0} MB\n{err}",
        peak_kb as f64 / 1024.0
    );
    assert!(!out.status.success());
    assert!(!err.contains("panicked"), "{err}");
    for needle in [
        "not enough memory",
        "4096×4096",
        "--batch-gpu",
        "dataset.zip",
        "--max-memory",
    ] {
        assert!(err.contains(needle), "{needle:?} missing:\n{err}");
    }
    assert!(secs < 30.0, "took {secs} s");
    assert!(peak_kb < 1024 * 1024, "peak RSS {peak_kb} kB");
}

fn pngs(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .map(|r| r.filter_map(|e| e.ok().map(|e| e.path())).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .filter(|p| p.file_name().unwrap().to_str().unwrap().contains(".png"))
        .map(|p| {
            (
                p.file_name().unwrap().to_str().unwrap().to_string(),
                std::fs::read(&p).unwrap(),
            )
        })
        .collect();
    v.sort();
    v
}

#[test]
fn sigterm_stops_generate_at_a_batch_boundary_and_resume_completes() {
    let d = tempfile::tempdir().unwrap();
    let net = fixture("nets/edm_ddpmpp_r16_uncond/network-snapshot-000000.pkl");
    let args = |out: &Path| -> Vec<String> {
        [
            "generate",
            "--network",
            &s(&net),
            "--outdir",
            &s(out),
            "--seeds",
            "0-59",
            "--batch",
            "2",
            "--steps",
            "4",
            "--quiet",
        ]
        .iter()
        .map(|x| x.to_string())
        .collect()
    };
    let (full, stopped) = (d.path().join("full"), d.path().join("stopped"));
    ok(tiw().args(args(&full)).output().unwrap(), "generate");
    let mut child = spawn({
        let mut c = tiw();
        c.args(args(&stopped));
        c
    });
    assert!(wait_until(&mut child, || pngs(&stopped).len() >= 4));
    signal(&child, libc::SIGTERM);
    let (out, secs) = finish(child);
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    let got = pngs(&stopped);
    println!(
        "generate: SIGTERM → exit {:?} in {secs:.2} s with {} PNGs",
        out.status.code(),
        got.len()
    );
    assert!(
        !out.status.success() && err.contains("interrupted by SIGTERM") && err.contains("--resume"),
        "{err}"
    );
    assert!(got.len() < 60 && got.len() % 2 == 0, "{} PNGs", got.len());
    assert!(
        got.iter().all(|(n, _)| n.ends_with(".png")),
        "temporary files left"
    );
    let mut resume = args(&stopped);
    resume.push("--resume".into());
    ok(tiw().args(resume).output().unwrap(), "generate --resume");
    assert!(pngs(&stopped) == pngs(&full), "resumed images differ");
}

/// Runs `c` to the end with stdout/stderr in files; its exit status, stderr and peak
/// resident size (bytes): the child's VmHWM (/proc, reset at exec, so the forked test
/// process's pages do not count), polled every 5 ms until it exits.
fn run_measured(mut c: Command, dir: &Path, name: &str) -> (bool, String, f64) {
    let (out, err) = (dir.join(format!("{name}.out")), dir.join(format!("{name}.err")));
    c.stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(&err).unwrap());
    let mut child = c.spawn().unwrap();
    let status = format!("/proc/{}/status", child.id());
    let (mut peak_kb, t0) = (0u64, Instant::now());
    let code = loop {
        if let Ok(st) = std::fs::read_to_string(&status) {
            if let Some(l) = st.lines().find(|l| l.starts_with("VmHWM:")) {
                peak_kb = peak_kb.max(l.split_whitespace().nth(1).unwrap().parse().unwrap());
            }
        }
        if let Some(code) = child.try_wait().unwrap() {
            break code;
        }
        if t0.elapsed() > WAIT * 2 {
            let _ = child.kill();
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let text = std::fs::read_to_string(&err).unwrap_or_default();
    (code.success(), text, peak_kb as f64 * 1024.0)
}

/// Sampling (the demo's batch of 250 on ONNX Runtime and libtorch, with and without DG; a
/// larger 32×32 network at batch 64 where activations dominate) and FID (Inception at the
/// default batch 64): the estimate printed before the first batch against the process's
/// measured peak, within ±30 %.
#[test]
fn sampling_and_fid_estimates_track_measured_peaks() {
    let d = tempfile::tempdir().unwrap();
    let net = fixture("nets/edm_ddpmpp_r16_uncond/network-snapshot-000000.pkl");
    // a 32×32 DDPM++ with 64 channels, 2 blocks and attention at 16×16 (random init)
    let data = d.path().join("d32");
    png_folder(&data, 32, 4);
    let runs = d.path().join("runs");
    ok(
        tiw()
            .args([
                "train",
                "--data",
                &s(&data),
                "--outdir",
                &s(&runs),
                "--precond",
                "edm",
                "--cbase",
                "64",
                "--cres",
                "1,2,2",
                "--num-blocks",
                "2",
                "--attn",
                "16",
                "--batch",
                "2",
                "--duration",
                "0.000002",
                "--augment",
                "0",
                "--tick",
                "1",
                "--quiet",
            ])
            .output()
            .unwrap(),
        "32×32 network",
    );
    let mid = run_dir(&runs).join("network-snapshot-000000.safetensors");
    let (fe, dis) = (
        fixture("classifier/feature_extractor.pt"),
        fixture("classifier/discriminator.pt"),
    );
    let gen = |net: &Path, out: &str, seeds: &str, batch: &str, rt: &str, dg: bool| {
        let mut c = tiw();
        c.args([
            "generate",
            "--network",
            &s(net),
            "--outdir",
            &s(&d.path().join(out)),
            "--seeds",
            seeds,
            "--batch",
            batch,
            "--steps",
            "2",
            "--runtime",
            rt,
        ]);
        if dg {
            c.args(["--extractor", &s(&fe), "--discriminator", &s(&dis)]);
        }
        c
    };
    let mut cases = vec![
        (
            "sampling, demo net r16, ort",
            gen(&net, "a", "0-249", "250", "ort", false),
        ),
        (
            "sampling, demo net r16, tch",
            gen(&net, "b", "0-249", "250", "tch", false),
        ),
        (
            "sampling + DG, r16, ort",
            gen(&net, "c", "0-249", "250", "ort", true),
        ),
        (
            "sampling, 32×32 c64, ort",
            gen(&mid, "e", "0-63", "64", "ort", false),
        ),
        (
            "sampling, 32×32 c64, tch",
            gen(&mid, "f", "0-63", "64", "tch", false),
        ),
    ];
    if let Some(w) = common::inception_weights() {
        let mut c = tiw();
        c.args([
            "fid",
            "ref",
            "--data",
            &s(&d.path().join("a")),
            "--num",
            "128",
            "--dest",
            &s(&d.path().join("ref.npz")),
            "--detector",
            &s(&w),
            "--batch",
            "64",
        ]);
        cases.push(("FID, Inception ort, batch 64", c));
    }
    println!("| job | estimate GB | measured peak (VmHWM) GB | ratio |");
    let mut bad = Vec::new();
    for (k, (what, c)) in cases.into_iter().enumerate() {
        let (ok, err, peak) = run_measured(c, d.path(), &format!("job{k}"));
        assert!(ok, "{what} failed:\n{err}");
        let est = gb_after(&err, "estimated peak ") * 1e9;
        println!(
            "| {what} | {:.2} | {:.2} | {:.2} |",
            est / 1e9,
            peak / 1e9,
            est / peak
        );
        if (est / peak - 1.0).abs() > 0.3 {
            bad.push(format!("{what}: estimate {est} vs peak {peak}"));
        }
    }
    assert!(bad.is_empty(), "{bad:?}");
}

/// A batch that cannot fit stops before the first batch with the estimate, the limit and
/// what to change; `--max-memory` sets the limit.
#[test]
fn sampling_and_fid_over_the_limit_stop_with_a_clear_message() {
    let d = tempfile::tempdir().unwrap();
    let net = fixture("nets/edm_ddpmpp_r16_uncond/network-snapshot-000000.pkl");
    let out = tiw()
        .args([
            "generate",
            "--network",
            &s(&net),
            "--outdir",
            &s(&d.path().join("g")),
            "--seeds",
            "0-9999",
            "--batch",
            "5000",
            "--max-memory",
            "0.3",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    println!("{err}");
    assert!(!out.status.success());
    for needle in [
        "not enough memory for sampling",
        "0.30 GB (--max-memory)",
        "Lower --batch",
        "or lower",
    ] {
        assert!(err.contains(needle), "{needle:?} missing:\n{err}");
    }
    assert!(!d.path().join("g").join("000000.png").exists());
    let Some(w) = common::inception_weights() else {
        return;
    };
    let out = tiw()
        .args([
            "fid",
            "ref",
            "--data",
            &s(&fixture("dataset/dataset.zip")),
            "--dest",
            &s(&d.path().join("r.npz")),
            "--detector",
            &s(&w),
            "--batch",
            "512",
            "--max-memory",
            "1",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success());
    for needle in [
        "not enough memory for FID",
        "Inception activations",
        "1.00 GB (--max-memory)",
        "--batch",
    ] {
        assert!(err.contains(needle), "{needle:?} missing:\n{err}");
    }
}

/// Resuming a network of another resolution than the dataset's images fails before
/// training, naming the dataset file and both resolutions.
#[test]
fn network_and_dataset_resolutions_that_differ_are_named() {
    let d = tempfile::tempdir().unwrap();
    let data16 = d.path().join("d16");
    png_folder(&data16, 16, 4);
    let runs = d.path().join("runs");
    let tiny = |data: &Path, extra: &[&str]| {
        let mut c = tiw();
        c.args([
            "train",
            "--data",
            &s(data),
            "--outdir",
            &s(&runs),
            "--precond",
            "edm",
            "--cbase",
            "16",
            "--cres",
            "1,2",
            "--num-blocks",
            "1",
            "--attn",
            "none",
            "--batch",
            "2",
            "--duration",
            "0.000002",
            "--augment",
            "0",
            "--tick",
            "1",
            "--quiet",
        ])
        .args(extra);
        c
    };
    ok(tiny(&data16, &[]).output().unwrap(), "16×16 run");
    let state = states(&run_dir(&runs))[0].clone();
    // the 8×8 fixture dataset under a 16×16 network
    let out = tiny(&fixture("dataset/dataset.zip"), &["--resume", &s(&state)])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    println!("{err}");
    assert!(!out.status.success());
    assert!(!err.contains("panicked"), "{err}");
    for needle in ["dataset.zip", "16×16", "8×8"] {
        assert!(err.contains(needle), "{needle:?} missing:\n{err}");
    }
}

/// Spawns `c` with stderr on a pseudo-terminal (so that the progress bar draws); the child
/// and a channel of the text it writes there.
fn spawn_on_pty(mut c: Command) -> (Child, std::sync::mpsc::Receiver<String>) {
    use std::io::Read;
    use std::os::fd::FromRawFd;
    let (mut master, mut slave) = (0, 0);
    let ws = libc::winsize {
        ws_row: 24,
        ws_col: 120,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: openpty writes two fresh descriptors into the locals.
    let rc = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            &ws,
        )
    };
    assert_eq!(rc, 0, "openpty failed");
    // close-on-exec, so that children spawned from now on by other tests do not inherit them
    // (openpty takes no flags; a fork in between is possible but harmless here)
    for fd in [master, slave] {
        // SAFETY: fcntl on descriptors openpty just returned.
        assert_ne!(unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) }, -1);
    }
    // SAFETY: the descriptors are ours and each is wrapped exactly once.
    let (mut m, sl) = unsafe {
        (
            std::fs::File::from_raw_fd(master),
            std::fs::File::from_raw_fd(slave),
        )
    };
    c.stdout(Stdio::null()).stderr(Stdio::from(sl));
    let child = c.spawn().unwrap();
    drop(c); // closes our copy of the slave: the reader sees EOF/EIO when the child exits
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = m.read(&mut buf) {
            if n == 0 || tx.send(String::from_utf8_lossy(&buf[..n]).into_owned()).is_err() {
                break;
            }
        }
    });
    (child, rx)
}

/// `tiw fid` stopped by SIGTERM after its first batch: it ends at the next batch boundary,
/// says how far it got and to rerun, writes no statistics file; the rerun equals an
/// uninterrupted run byte for byte.
#[test]
fn sigterm_stops_fid_at_a_batch_boundary() {
    let Some(w) = common::inception_weights() else {
        return;
    };
    let d = tempfile::tempdir().unwrap();
    let data = fixture("dataset/dataset.zip"); // 20 images
    let args = |dest: &Path| -> Vec<String> {
        [
            "fid",
            "ref",
            "--data",
            &s(&data),
            "--dest",
            &s(dest),
            "--detector",
            &s(&w),
            "--batch",
            "2",
            "--workers",
            "1",
        ]
        .iter()
        .map(|x| x.to_string())
        .collect()
    };
    let (straight, stopped) = (d.path().join("straight.npz"), d.path().join("stopped.npz"));
    ok(tiw().args(args(&straight)).output().unwrap(), "fid ref");
    let mut c = tiw();
    c.args(args(&stopped));
    let (mut child, rx) = spawn_on_pty(c);
    let t0 = Instant::now();
    let mut text = String::new();
    // a count drawn by the bar: the digits right before a "/20 images" (only text followed
    // by it — a partial read can end in the bar's elapsed time, e.g. "[00:00:02")
    let progressed = |t: &str| {
        t.match_indices("/20 images").any(|(at, _)| {
            let digits: Vec<char> = t[..at].chars().rev().take_while(|c| c.is_ascii_digit()).collect();
            let count: String = digits.into_iter().rev().collect();
            count.parse::<u32>().is_ok_and(|n| n >= 2)
        })
    };
    while !progressed(&text) && t0.elapsed() < WAIT && child.try_wait().unwrap().is_none() {
        if let Ok(chunk) = rx.recv_timeout(Duration::from_millis(50)) {
            text.push_str(&chunk);
        }
    }
    assert!(progressed(&text), "no batch finished:\n{text}");
    signal(&child, libc::SIGTERM);
    let t1 = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        assert!(t1.elapsed() < WAIT, "fid did not stop");
        std::thread::sleep(Duration::from_millis(20));
    };
    while let Ok(chunk) = rx.recv_timeout(Duration::from_millis(500)) {
        text.push_str(&chunk);
    }
    println!(
        "fid: SIGTERM → exit {:?} in {:.2} s",
        status.code(),
        t1.elapsed().as_secs_f64()
    );
    // a stopped FID has no result: it fails (a script must not take it for a value) and
    // says where it stopped and what to do
    assert!(!status.success());
    let i = text
        .find("interrupted by SIGTERM after ")
        .unwrap_or_else(|| panic!("{text}"));
    let done: usize = text[i + 29..].split_whitespace().next().unwrap().parse().unwrap();
    assert!(
        (2..20).contains(&done) && done % 2 == 0,
        "stopped after {done} images:\n{text:?}"
    );
    assert!(
        text.contains("batch boundary") && text.contains("rerun"),
        "{text}"
    );
    assert!(!stopped.exists(), "a partial statistics file was written");
    let leftovers: Vec<_> = std::fs::read_dir(d.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(leftovers.len(), 1, "{leftovers:?}");
    ok(tiw().args(args(&stopped)).output().unwrap(), "fid ref rerun");
    assert_eq!(
        std::fs::read(&stopped).unwrap(),
        std::fs::read(&straight).unwrap()
    );
}
