//! The data-parallel layer (`tiw::dist`, `tiw launch`, `tiw dist-check`):
//! * launcher environments (torchrun, Slurm) parsed, garbled ones refused by name;
//! * 2 ranks on loopback through `tiw launch`, the real torchrun, and two "nodes";
//! * failures end as errors within the timeout, never hangs: a rank that dies, a rank that
//!   hangs, a rendezvous without a server, an interrupted launcher.
//!
//! Every process is run under a wall-clock limit (killed past it), and the multi-process
//! tests run one at a time (2 ranks each on a small machine).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tiw::dist::{first_host, tasks_per_node, BackendChoice, DistError, EnvSource, LaunchEnv};

// ---------------------------------------------------------------- environment parsing

fn parse(vars: &[(&str, &str)]) -> Result<Option<LaunchEnv>, DistError> {
    let m: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    LaunchEnv::from_vars(|k| m.get(k).cloned())
}

fn parse_err(vars: &[(&str, &str)]) -> String {
    match parse(vars) {
        Err(e) => e.to_string(),
        Ok(v) => panic!("expected an error for {vars:?}, got {v:?}"),
    }
}

#[test]
fn env_torchrun() {
    assert_eq!(parse(&[]).unwrap(), None);
    assert_eq!(parse(&[("PATH", "/bin"), ("SLURM_JOB_ID", "5")]).unwrap(), None);
    let e = parse(&[
        ("RANK", "3"),
        ("WORLD_SIZE", "4"),
        ("LOCAL_RANK", "1"),
        ("LOCAL_WORLD_SIZE", "2"),
        ("MASTER_ADDR", "node7"),
        ("MASTER_PORT", "29500"),
        // torchrun's variables win over Slurm's (srun torchrun ...)
        ("SLURM_PROCID", "0"),
        ("SLURM_NTASKS", "2"),
    ])
    .unwrap()
    .unwrap();
    assert_eq!(
        e,
        LaunchEnv {
            rank: 3,
            world_size: 4,
            local_rank: 1,
            local_world_size: 2,
            master_addr: "node7".into(),
            master_port: 29500,
            source: EnvSource::Torchrun,
            agent_store: false,
        }
    );
    // env:// by hand: no LOCAL_* means one node
    let e = parse(&[
        ("RANK", "1"),
        ("WORLD_SIZE", "2"),
        ("MASTER_ADDR", "127.0.0.1"),
        ("MASTER_PORT", "1234"),
    ])
    .unwrap()
    .unwrap();
    assert_eq!((e.local_rank, e.local_world_size), (1, 2));
    // under torchrun the store already runs in its agent
    let e = parse(&[
        ("RANK", "0"),
        ("WORLD_SIZE", "2"),
        ("MASTER_ADDR", "h"),
        ("MASTER_PORT", "1234"),
        ("TORCHELASTIC_USE_AGENT_STORE", "True"),
    ])
    .unwrap()
    .unwrap();
    assert!(e.agent_store);
}

#[test]
fn env_torchrun_errors() {
    let base = [
        ("RANK", "0"),
        ("WORLD_SIZE", "2"),
        ("MASTER_ADDR", "h"),
        ("MASTER_PORT", "29500"),
    ];
    let with = |k: &str, v: &str| -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = base
            .iter()
            .filter(|(b, _)| *b != k)
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        if !v.is_empty() {
            out.push((k.to_string(), v.to_string()));
        }
        out
    };
    let err = |vars: Vec<(String, String)>| {
        let v: Vec<(&str, &str)> = vars.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
        parse_err(&v)
    };
    for (k, v, want) in [
        ("RANK", "two", "RANK=\"two\""),
        ("RANK", "-1", "RANK=\"-1\""),
        ("RANK", "2", "must be below WORLD_SIZE=2"),
        ("WORLD_SIZE", "0", "WORLD_SIZE"),
        ("WORLD_SIZE", "", "WORLD_SIZE is not set"),
        ("MASTER_PORT", "70000", "MASTER_PORT=\"70000\": not a TCP port"),
        ("MASTER_PORT", "0", "not a TCP port"),
        ("MASTER_PORT", "", "MASTER_PORT is not set"),
        ("MASTER_ADDR", "", "MASTER_ADDR is not set"),
        ("LOCAL_RANK", "x", "LOCAL_RANK=\"x\""),
        (
            "LOCAL_WORLD_SIZE",
            "3",
            "LOCAL_WORLD_SIZE=\"3\": must be between 1 and WORLD_SIZE=2",
        ),
    ] {
        let msg = err(with(k, v));
        assert!(msg.contains(want), "{k}={v:?}: {msg:?} lacks {want:?}");
    }
    let msg = parse_err(&[("WORLD_SIZE", "2"), ("MASTER_ADDR", "h"), ("MASTER_PORT", "1")]);
    assert!(msg.contains("RANK is not set"), "{msg}");
    let msg = parse_err(&[
        ("RANK", "0"),
        ("WORLD_SIZE", "4"),
        ("LOCAL_RANK", "2"),
        ("LOCAL_WORLD_SIZE", "2"),
        ("MASTER_ADDR", "h"),
        ("MASTER_PORT", "1"),
    ]);
    assert!(msg.contains("LOCAL_RANK=\"2\""), "{msg}");
}

#[test]
fn env_slurm() {
    let e = parse(&[
        ("SLURM_PROCID", "5"),
        ("SLURM_NTASKS", "8"),
        ("SLURM_LOCALID", "1"),
        ("SLURM_TASKS_PER_NODE", "2(x3),1,1"),
        ("SLURM_NODEID", "2"),
        ("SLURM_JOB_NODELIST", "gpu[003-005,009],cpu1"),
        ("SLURM_JOB_ID", "1234567"),
    ])
    .unwrap()
    .unwrap();
    assert_eq!(
        e,
        LaunchEnv {
            rank: 5,
            world_size: 8,
            local_rank: 1,
            local_world_size: 2,
            master_addr: "gpu003".into(),
            master_port: 20000 + 4567,
            source: EnvSource::Slurm,
            agent_store: false,
        }
    );
    // the step's own values first; MASTER_* override the derived address/port
    let e = parse(&[
        ("SLURM_PROCID", "0"),
        ("SLURM_NTASKS", "16"),
        ("SLURM_STEP_NUM_TASKS", "4"),
        ("SLURM_LOCALID", "0"),
        ("SLURM_NTASKS_PER_NODE", "4"),
        ("SLURM_STEP_NODELIST", "a1"),
        ("SLURM_JOB_NODELIST", "b[1-2]"),
        ("MASTER_PORT", "4000"),
    ])
    .unwrap()
    .unwrap();
    assert_eq!(
        (
            e.world_size,
            e.local_world_size,
            e.master_addr.as_str(),
            e.master_port
        ),
        (4, 4, "a1", 4000)
    );

    assert_eq!(first_host("X", "node1").unwrap(), "node1");
    assert_eq!(first_host("X", "n[07-09]-ib,m1").unwrap(), "n07-ib");
    assert_eq!(tasks_per_node("X", "4").unwrap(), vec![4]);
    assert_eq!(tasks_per_node("X", "1(x2),3").unwrap(), vec![1, 1, 3]);
    for garbled in ["", "a[", "a[x-1]", "a[1-2"] {
        assert!(first_host("SLURM_JOB_NODELIST", garbled).is_err(), "{garbled:?}");
    }
    for garbled in ["", "2(x", "two", "2(x3", "2(xa)"] {
        assert!(
            tasks_per_node("SLURM_TASKS_PER_NODE", garbled).is_err(),
            "{garbled:?}"
        );
    }
}

#[test]
fn env_slurm_errors() {
    let base = vec![
        ("SLURM_PROCID", "0"),
        ("SLURM_NTASKS", "2"),
        ("SLURM_LOCALID", "0"),
        ("SLURM_TASKS_PER_NODE", "2"),
        ("SLURM_JOB_NODELIST", "n1"),
        ("SLURM_JOB_ID", "42"),
    ];
    assert!(parse(&base).unwrap().is_some());
    let cases: [(&str, Option<&str>, &str); 7] = [
        ("SLURM_NTASKS", None, "SLURM_NTASKS is not set"),
        ("SLURM_LOCALID", None, "SLURM_LOCALID is not set"),
        (
            "SLURM_PROCID",
            Some("2"),
            "SLURM_PROCID=\"2\": must be below SLURM_NTASKS=2",
        ),
        (
            "SLURM_TASKS_PER_NODE",
            Some("2(x"),
            "SLURM_TASKS_PER_NODE=\"2(x\"",
        ),
        ("SLURM_JOB_NODELIST", Some("n[1-"), "SLURM_JOB_NODELIST=\"n[1-\""),
        ("SLURM_JOB_ID", None, "SLURM_JOB_ID is not set"),
        ("SLURM_JOB_ID", Some("abc"), "SLURM_JOB_ID=\"abc\""),
    ];
    for (k, v, want) in cases {
        let mut vars: Vec<(&str, &str)> = base.iter().copied().filter(|(b, _)| *b != k).collect();
        if let Some(v) = v {
            vars.push((k, v));
        }
        let msg = parse_err(&vars);
        assert!(msg.contains(want), "{k}={v:?}: {msg:?} lacks {want:?}");
    }
    let mut vars = base.clone();
    vars.push(("SLURM_NODEID", "3"));
    assert!(parse_err(&vars).contains("SLURM_NODEID=\"3\""));
}

#[test]
fn backend_choice() {
    use tch::Device;
    use tiw::dist::Backend;
    assert_eq!(BackendChoice::Auto.resolve(Device::Cpu).unwrap(), Backend::Gloo);
    assert_eq!(
        BackendChoice::Gloo.resolve(Device::Cuda(0)).unwrap(),
        Backend::Gloo
    );
    let msg = BackendChoice::Nccl
        .resolve(Device::Cuda(0))
        .map_err(|e| e.to_string());
    if !tiw::dist::has_nccl() {
        assert_eq!(
            msg.unwrap_err(),
            "this build has no NCCL support: rebuild with --features nccl"
        );
        assert_eq!(
            BackendChoice::Auto.resolve(Device::Cuda(0)).unwrap(),
            Backend::Gloo
        );
    }
    assert!(BackendChoice::Nccl.resolve(Device::Cpu).is_err());
    let env = LaunchEnv {
        rank: 3,
        world_size: 4,
        local_rank: 1,
        local_world_size: 2,
        master_addr: "h".into(),
        master_port: 1,
        source: EnvSource::Torchrun,
        agent_store: false,
    };
    assert_eq!(tiw::dist::local_device(Device::Cpu, Some(&env)), Device::Cpu);
    assert_eq!(tiw::dist::local_device(Device::Cuda(0), None), Device::Cuda(0));
}

// ---------------------------------------------------------------- processes

/// The multi-process tests take turns.
static SERIAL: Mutex<()> = Mutex::new(());

fn bin_dir() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_tiw"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn tiw() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_tiw"));
    clean_env(&mut c);
    c
}

/// Removes any launcher variables this test process itself may run under.
fn clean_env(c: &mut Command) {
    for (k, _) in std::env::vars() {
        if k.starts_with("SLURM_")
            || [
                "RANK",
                "WORLD_SIZE",
                "LOCAL_RANK",
                "LOCAL_WORLD_SIZE",
                "MASTER_ADDR",
                "MASTER_PORT",
                "GROUP_RANK",
            ]
            .contains(&k.as_str())
        {
            c.env_remove(k);
        }
    }
}

struct Outcome {
    ok: bool,
    code: Option<i32>,
    out: String,
    err: String,
    secs: f64,
}

/// Starts `c` with stdout/stderr in temporary files.
fn start(mut c: Command, dir: &Path, name: &str) -> (std::process::Child, PathBuf, PathBuf, Instant) {
    let (o, e) = (dir.join(format!("{name}.out")), dir.join(format!("{name}.err")));
    c.stdout(Stdio::from(std::fs::File::create(&o).unwrap()))
        .stderr(Stdio::from(std::fs::File::create(&e).unwrap()));
    (c.spawn().expect("start process"), o, e, Instant::now())
}

/// Waits for a started process for at most `limit`: past it, SIGTERM (a launcher passes it
/// on to its ranks), then SIGKILL, and the test fails.
fn finish(started: (std::process::Child, PathBuf, PathBuf, Instant), limit: Duration, what: &str) -> Outcome {
    let (mut child, o, e, t0) = started;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if t0.elapsed() > limit {
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            std::thread::sleep(Duration::from_secs(3));
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{what}: still running after {limit:?} (killed)\nstdout:\n{}\nstderr:\n{}",
                std::fs::read_to_string(&o).unwrap_or_default(),
                std::fs::read_to_string(&e).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    Outcome {
        ok: status.success(),
        code: status.code(),
        out: std::fs::read_to_string(&o).unwrap(),
        err: std::fs::read_to_string(&e).unwrap(),
        secs: t0.elapsed().as_secs_f64(),
    }
}

fn run(c: Command, limit: Duration, what: &str) -> Outcome {
    let dir = tempfile::tempdir().unwrap();
    finish(start(c, dir.path(), "p"), limit, what)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind(("127.0.0.1", 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn assert_ok_ranks(o: &Outcome, world: usize, what: &str) {
    assert!(
        o.ok,
        "{what} failed ({:?})\nstdout:\n{}\nstderr:\n{}",
        o.code, o.out, o.err
    );
    for r in 0..world {
        let line = format!("dist-check ok rank {r}/{world} backend gloo");
        let want = if r == 0 {
            line
        } else {
            format!("[rank {r}] {line}")
        };
        assert!(
            o.out.lines().any(|l| l == want),
            "{what}: no line {want:?} in\n{}\nstderr:\n{}",
            o.out,
            o.err
        );
    }
}

const LIMIT: Duration = Duration::from_secs(120);

#[test]
fn launch_two_ranks() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut c = tiw();
    c.args([
        "launch",
        "--nproc-per-node",
        "2",
        "--",
        "dist-check",
        "--dist-timeout",
        "60",
    ]);
    let o = run(c, LIMIT, "tiw launch");
    assert_ok_ranks(&o, 2, "tiw launch");
    // rank 1's stderr is prefixed too
    assert!(
        o.err.contains("[rank 1] dist-check: rank 1/2 joined"),
        "{}",
        o.err
    );
    assert!(
        o.err
            .lines()
            .any(|l| l.starts_with("dist-check: rank 0/2 joined")),
        "{}",
        o.err
    );
    eprintln!("tiw launch, 2 ranks: {:.1} s", o.secs);
}

#[test]
fn torchrun_two_ranks() {
    let Ok(py) = std::env::var("TIW_TORCH_PY") else {
        eprintln!("SKIPPED: TIW_TORCH_PY is not set (run through `make test`, which provides a full-torch venv with torchrun)");
        return;
    };
    let torchrun = Path::new(&py).parent().unwrap().join("torchrun");
    if !torchrun.exists() {
        eprintln!("SKIPPED: {} does not exist", torchrun.display());
        return;
    }
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut c = Command::new(&torchrun);
    clean_env(&mut c);
    c.args(["--no-python", "--standalone", "--nproc-per-node", "2"])
        .arg(env!("CARGO_BIN_EXE_tiw"))
        .args(["dist-check", "--dist-timeout", "60"]);
    let o = run(c, LIMIT, "torchrun");
    assert!(
        o.ok,
        "torchrun failed ({:?})\nstdout:\n{}\nstderr:\n{}",
        o.code, o.out, o.err
    );
    for r in 0..2 {
        let want = format!("dist-check ok rank {r}/2 backend gloo");
        assert!(
            o.out.contains(&want),
            "no {want:?} in\n{}\nstderr:\n{}",
            o.out,
            o.err
        );
    }
    eprintln!("torchrun, 2 ranks: {:.1} s", o.secs);
}

#[test]
fn launch_two_nodes() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let port = free_port().to_string();
    let node = |r: &str| {
        let mut c = tiw();
        c.args([
            "launch",
            "--nnodes",
            "2",
            "--node-rank",
            r,
            "--nproc-per-node",
            "1",
        ])
        .args(["--master-addr", "127.0.0.1", "--master-port", &port])
        .args(["--", "dist-check", "--dist-timeout", "60"]);
        start(c, dir.path(), r)
    };
    let (n0, n1) = (node("0"), node("1"));
    let (o0, o1) = (finish(n0, LIMIT, "node 0"), finish(n1, LIMIT, "node 1"));
    assert!(
        o0.ok && o1.ok,
        "node 0:\n{}{}\nnode 1:\n{}{}",
        o0.out,
        o0.err,
        o1.out,
        o1.err
    );
    assert!(
        o0.out.lines().any(|l| l == "dist-check ok rank 0/2 backend gloo"),
        "{}",
        o0.out
    );
    assert!(
        o1.out
            .lines()
            .any(|l| l == "[rank 1] dist-check ok rank 1/2 backend gloo"),
        "{}",
        o1.out
    );
}

#[test]
fn rank_dying_fails_the_others_fast() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    // Through the launcher: it names the rank that died and stops the other.
    let mut c = tiw();
    c.args(["launch", "--nproc-per-node", "2", "--"]).args([
        "dist-check",
        "--dist-timeout",
        "10",
        "--fail-at",
        "all-reduce",
    ]);
    let o = run(c, LIMIT, "launch with a dying rank");
    assert!(!o.ok, "should fail:\n{}\n{}", o.out, o.err);
    assert!(
        o.err.contains("error: tiw launch: rank 1 exited with status 3"),
        "{}",
        o.err
    );
    assert!(o.secs < 30.0, "took {:.1} s", o.secs);

    // Without a launcher in between: rank 0 itself reports the broken connection.
    let dir = tempfile::tempdir().unwrap();
    let port = free_port().to_string();
    let rank = |r: &str, extra: &[&str]| {
        let mut c = Command::new(bin_dir().join("tiw-full"));
        clean_env(&mut c);
        c.envs([
            ("RANK", r),
            ("WORLD_SIZE", "2"),
            ("MASTER_ADDR", "127.0.0.1"),
            ("MASTER_PORT", port.as_str()),
        ])
        .args(["dist-check", "--dist-timeout", "10"])
        .args(extra);
        start(c, dir.path(), r)
    };
    let (p0, p1) = (rank("0", &[]), rank("1", &["--fail-at", "broadcast"]));
    let (o0, o1) = (finish(p0, LIMIT, "rank 0"), finish(p1, LIMIT, "rank 1"));
    assert_eq!(o1.code, Some(3), "{}", o1.err);
    assert!(!o0.ok, "rank 0 should fail:\n{}\n{}", o0.out, o0.err);
    // "Connection closed by peer" or "Read error [...]: Connection reset by peer", as the
    // timing falls
    assert!(
        o0.err.contains("rank 0/2 (gloo): broadcast failed: ") && o0.err.contains(" by peer"),
        "{}",
        o0.err
    );
    assert!(o0.secs < 30.0, "rank 0 took {:.1} s", o0.secs);
    eprintln!("rank 0's error: {}", o0.err.lines().last().unwrap_or(""));
}

#[test]
fn hung_rank_times_out() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut c = tiw();
    c.args(["launch", "--nproc-per-node", "2", "--grace-secs", "2", "--"])
        .args([
            "dist-check",
            "--dist-timeout",
            "5",
            "--fail-at",
            "all-gather",
            "--hang",
        ]);
    let o = run(c, LIMIT, "launch with a hung rank");
    assert!(!o.ok, "should fail:\n{}\n{}", o.out, o.err);
    assert!(
        o.err
            .contains("all_gather failed: no answer within the 5.0 s timeout"),
        "{}",
        o.err
    );
    assert!(
        o.err.contains("error: tiw launch: rank 0 exited with status 1"),
        "{}",
        o.err
    );
    assert!(o.secs < 5.0 + 20.0, "took {:.1} s", o.secs);
    eprintln!("hung peer: launcher done after {:.1} s", o.secs);
}

#[test]
fn rendezvous_without_server_times_out() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    // rank 1 of 2 at a port where nothing listens; then rank 0 of 2 whose peer never comes
    for (r, want) in [
        ("1", "cannot join the process group at 127.0.0.1:"),
        ("0", "cannot join the process group"),
    ] {
        let mut c = Command::new(bin_dir().join("tiw-full"));
        clean_env(&mut c);
        let port = free_port().to_string();
        c.envs([
            ("RANK", r),
            ("WORLD_SIZE", "2"),
            ("MASTER_ADDR", "127.0.0.1"),
            ("MASTER_PORT", port.as_str()),
        ])
        .args(["dist-check", "--dist-timeout", "3"]);
        let o = run(c, LIMIT, "lonely rank");
        assert!(!o.ok, "rank {r} should fail:\n{}\n{}", o.out, o.err);
        assert!(o.err.contains(want), "rank {r}: {}", o.err);
        assert!(o.secs < 3.0 + 20.0, "rank {r} took {:.1} s", o.secs);
        eprintln!(
            "rank {r} alone: {:.1} s: {}",
            o.secs,
            o.err.lines().last().unwrap_or("")
        );
    }
    // and a garbled environment is refused by name
    let mut c = Command::new(bin_dir().join("tiw-full"));
    clean_env(&mut c);
    c.envs([
        ("RANK", "0"),
        ("WORLD_SIZE", "2"),
        ("MASTER_ADDR", "127.0.0.1"),
        ("MASTER_PORT", "http"),
    ])
    .arg("dist-check");
    let o = run(c, LIMIT, "garbled env");
    assert!(!o.ok && o.err.contains("MASTER_PORT=\"http\""), "{}", o.err);
}

#[test]
fn launcher_forwards_sigterm() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    // rank 1 sleeps before joining, so rank 0 waits in the rendezvous: both are busy
    let mut c = tiw();
    c.args(["launch", "--nproc-per-node", "2", "--grace-secs", "5", "--"])
        .args([
            "dist-check",
            "--dist-timeout",
            "600",
            "--fail-at",
            "connect",
            "--hang",
        ]);
    let started = start(c, dir.path(), "launch");
    let pid = started.0.id() as i32;
    let t = Instant::now();
    let stderr = started.2.clone();
    while !std::fs::read_to_string(&stderr)
        .unwrap_or_default()
        .contains("stops at Connect")
    {
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "rank 1 never reached the hook"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let o = finish(started, Duration::from_secs(90), "interrupted launcher");
    assert_eq!(o.code, Some(128 + libc::SIGTERM), "{}", o.err);
    assert!(o.err.contains("interrupted by signal 15 (SIGTERM)"), "{}", o.err);
    assert!(
        t.elapsed() < Duration::from_secs(60 + 10),
        "took {:?}",
        t.elapsed()
    );
}

#[test]
fn launch_usage_errors() {
    for (args, want) in [
        (
            vec!["launch", "--nnodes", "2", "--", "doctor"],
            "give --master-addr and --master-port",
        ),
        (
            vec!["launch", "--node-rank", "1", "--", "doctor"],
            "--node-rank 1 is not below --nnodes 1",
        ),
        (
            vec!["launch", "--nproc-per-node", "0", "--", "doctor"],
            "at least 1",
        ),
    ] {
        let o = run(
            {
                let mut c = tiw();
                c.args(&args);
                c
            },
            LIMIT,
            "usage",
        );
        assert!(!o.ok && o.err.contains(want), "{args:?}: {}", o.err);
    }
    // a clean 1-rank run passes the child's exit status through
    let mut c = tiw();
    c.args([
        "launch",
        "--",
        "compare",
        "/nonexistent-a.npz",
        "/nonexistent-b.npz",
    ]);
    let o = run(c, LIMIT, "failing single rank");
    assert!(
        !o.ok && o.err.contains("error: tiw launch: rank 0 exited with status 1"),
        "{}",
        o.err
    );
}
