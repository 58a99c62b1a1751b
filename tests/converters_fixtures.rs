//! Parity of the checkpoint readers with the official PyTorch outputs in `tests/fixtures`:
//! every tensor bit-identical (bytes or sha256), exact name sets and order, recovered
//! configurations equal to `config.json`, and byte-stable round trips.

mod common;

use std::collections::BTreeSet;

use common::{fixture, read_npz, sha256};
use tiw_converters::{convert, open, Json, Selection, What};

const NETS: [&str; 6] = [
    "edm_adm_r16_uncond",
    "edm_ddpmpp_r16_uncond",
    "edm_ddpmpp_r8_cond10",
    "edm_ncsnpp_r16_uncond",
    "ve_ncsnpp_r8_uncond",
    "vp_ddpmpp_r8_uncond",
];

fn no_progress(_: u64, _: u64) {}

#[test]
fn snapshots_match_state_dict_and_config() {
    for net in NETS {
        let ck = open(&fixture(&format!("nets/{net}/network-snapshot-000000.pkl"))).unwrap();
        let ex = ck.extract(&Selection::default()).unwrap();
        let reference = read_npz(&fixture(&format!("nets/{net}/state_dict.npz")));
        let ours: Vec<&str> = ex.store.entries().iter().map(|e| e.name.as_str()).collect();
        let theirs: Vec<&str> = reference.iter().map(|a| a.name.as_str()).collect();
        assert_eq!(ours, theirs, "{net}: state_dict names/order differ");
        for a in &reference {
            let e = ex.store.get(&a.name).unwrap();
            assert_eq!(e.shape, a.shape, "{net}/{}: shape", a.name);
            assert_eq!(e.dtype.torch_name(), "float32");
            assert!(
                ex.store.bytes(e).as_ref() == a.le_bytes().as_slice(),
                "{net}/{}: bytes differ",
                a.name
            );
        }
        // configuration
        let cfg_text = std::fs::read_to_string(fixture(&format!("nets/{net}/config.json"))).unwrap();
        let reference = Json::parse(&cfg_text).unwrap();
        let ours = ex.config.expect("snapshot config");
        assert_eq!(
            ours.get("init_kwargs"),
            reference.get("init_kwargs"),
            "{net}: init_kwargs"
        );
        let attrs = ours.get("attributes").unwrap();
        for k in ["sigma_min", "sigma_max"] {
            let (a, b) = (
                attrs.get(k).and_then(Json::as_f64),
                reference.get(k).and_then(Json::as_f64),
            );
            assert_eq!(a, b, "{net}: {k}");
        }
        let class = reference
            .get("network_kwargs")
            .unwrap()
            .get("class_name")
            .unwrap()
            .as_str()
            .unwrap();
        assert_eq!(
            Some(class.rsplit('.').next().unwrap()),
            ours.get("class_name").and_then(Json::as_str)
        );
        let n_params: usize = ex
            .store
            .entries()
            .iter()
            .filter(|e| e.is_parameter)
            .map(|e| e.numel())
            .sum();
        assert_eq!(
            n_params as i64,
            reference.get("num_params").unwrap().as_i64().unwrap(),
            "{net}: #params"
        );
        assert_eq!(
            ex.store.total_numel() as i64,
            reference.get("num_state_elems").unwrap().as_i64().unwrap(),
            "{net}: #state elements"
        );
        let model = ours.get("model").expect("nested model config");
        assert!(model.get("init_kwargs").unwrap().get("in_channels").is_some());
        println!("{net}: {} tensors bit-identical, config equal", ex.store.len());
    }
}

fn check_digest(rel: &str) -> usize {
    let ck = open(&fixture(rel)).unwrap();
    let ex = ck.extract(&Selection::default()).unwrap();
    let digest =
        Json::parse(&std::fs::read_to_string(fixture(&format!("{rel}.digest.json"))).unwrap()).unwrap();
    let Json::Object(tensors) = digest.get("tensors").unwrap() else {
        panic!()
    };
    let want: BTreeSet<&str> = tensors.iter().map(|(k, _)| k.as_str()).collect();
    let got: BTreeSet<&str> = ex.store.entries().iter().map(|e| e.name.as_str()).collect();
    assert_eq!(got, want, "{rel}: name sets differ");
    for (name, d) in tensors {
        let e = ex.store.get(name).unwrap();
        let shape: Vec<usize> = match d.get("shape").unwrap() {
            Json::Array(a) => a.iter().map(|x| x.as_i64().unwrap() as usize).collect(),
            _ => panic!(),
        };
        assert_eq!(e.shape, shape, "{rel}/{name}: shape");
        assert_eq!(e.dtype.torch_name(), d.get("dtype").unwrap().as_str().unwrap());
        assert_eq!(
            sha256(&ex.store.bytes(e)),
            d.get("sha256").unwrap().as_str().unwrap(),
            "{rel}/{name}: sha256"
        );
    }
    let params: usize = ex.store.total_numel();
    assert_eq!(params as i64, digest.get("num_params").unwrap().as_i64().unwrap());
    println!("{rel}: {} tensors, sha256 equal", tensors.len());
    tensors.len()
}

#[test]
fn classifier_checkpoints_match_digests() {
    assert!(check_digest("classifier/feature_extractor.pt") > 0);
    assert!(check_digest("classifier/discriminator.pt") > 0);
    let ck = open(&fixture("classifier/discriminator_cond_legacy.pt")).unwrap();
    assert_eq!(ck.format, tiw_converters::Format::TorchLegacy);
    assert!(check_digest("classifier/discriminator_cond_legacy.pt") > 0);
}

#[test]
fn trained_discriminator_has_the_initial_layout() {
    let before = open(&fixture("classifier/discriminator.pt"))
        .unwrap()
        .extract(&Selection::default())
        .unwrap();
    let after = open(&fixture("disc_train/discriminator_1.pt"))
        .unwrap()
        .extract(&Selection::default())
        .unwrap();
    let names = |s: &tiw_converters::TensorStore| -> Vec<(String, Vec<usize>)> {
        s.entries()
            .iter()
            .map(|e| (e.name.clone(), e.shape.clone()))
            .collect()
    };
    assert_eq!(names(&before.store), names(&after.store));
    // One Adam step moves every parameter with a gradient by about lr: not bit-identical.
    let changed = before
        .store
        .entries()
        .iter()
        .filter(|e| before.store.bytes(e) != after.store.bytes(after.store.get(&e.name).unwrap()))
        .count();
    assert!(changed > before.store.len() / 2, "only {changed} tensors changed");
    // The archive folder is the file stem, as torch.save(path) names it.
    let ck = open(&fixture("disc_train/discriminator_1.pt")).unwrap();
    assert_eq!(ck.zip.as_ref().unwrap().prefix, "discriminator_1");
}

#[test]
fn training_state_net_and_optimizer() {
    let path = fixture("loss/training-state-002560.pt");
    let ck = open(&path).unwrap();
    assert_eq!(ck.kind(), tiw_converters::Kind::TrainingState);
    let step = read_npz(&fixture("loss/tiw_train_step.npz"));
    let by = |n: &str| step.iter().find(|a| a.name == n);
    let before = read_npz(&fixture("nets/edm_ddpmpp_r16_uncond/state_dict.npz"));

    let net = ck
        .extract(&Selection {
            key: None,
            what: What::Net,
        })
        .unwrap();
    let names: Vec<&str> = net.store.entries().iter().map(|e| e.name.as_str()).collect();
    let want: Vec<&str> = before.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(names, want, "training-state net names/order");
    let mut params = 0;
    for e in net.store.entries() {
        let reference = match by(&format!("after:{}", e.name)) {
            Some(a) => {
                params += 1;
                assert!(e.is_parameter, "{} should be a parameter", e.name);
                a
            }
            None => {
                assert!(!e.is_parameter, "{} has no after: entry", e.name);
                before.iter().find(|a| a.name == e.name).unwrap()
            }
        };
        assert!(
            net.store.bytes(e).as_ref() == reference.le_bytes().as_slice(),
            "{}: bytes",
            e.name
        );
    }
    assert_eq!(
        params,
        step.iter().filter(|a| a.name.starts_with("after:")).count()
    );

    let opt = ck
        .extract(&Selection {
            key: None,
            what: What::Optimizer,
        })
        .unwrap();
    let cfg = opt.config.unwrap();
    let groups = cfg.get("optimizer").unwrap().get("param_groups").unwrap();
    let Json::Array(groups) = groups else { panic!() };
    assert_eq!(groups[0].get("eps").and_then(Json::as_f64), Some(1e-8));
    let mut checked = 0;
    for e in opt.store.entries() {
        let (field, pname) = e
            .name
            .strip_prefix("optimizer.")
            .unwrap()
            .split_once('.')
            .unwrap();
        let values: Vec<f32> = opt
            .store
            .bytes(e)
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        match field {
            "step" => assert_eq!(values, vec![1.0], "{pname}: Adam step"),
            "exp_avg" => {
                // After one Adam step from zero: exp_avg = (1 - 0.9) * grad (in f32).
                let grad = by(&format!("grad:{pname}")).map(|a| a.to_f32());
                let grad = grad.unwrap_or_else(|| vec![0.0; values.len()]);
                let scale = (1.0f64 - 0.9) as f32;
                for (v, g) in values.iter().zip(&grad) {
                    assert_eq!(*v, g * scale, "{pname}: exp_avg");
                }
                checked += 1;
            }
            "exp_avg_sq" => assert_eq!(e.shape, net.store.get(pname).unwrap().shape),
            other => panic!("unexpected optimizer field {other}"),
        }
    }
    assert!(checked > 100, "checked exp_avg of {checked} parameters");
    let all = ck
        .extract(&Selection {
            key: None,
            what: What::All,
        })
        .unwrap();
    assert_eq!(all.store.len(), net.store.len() + opt.store.len());
    println!(
        "training state: {} net tensors, {} optimizer tensors ({checked} exp_avg exact)",
        net.store.len(),
        opt.store.len()
    );
}

fn data_of(path: &std::path::Path) -> Vec<(String, Vec<u8>)> {
    let ex = open(path).unwrap().extract(&Selection::default()).unwrap();
    ex.store
        .entries()
        .iter()
        .map(|e| (e.name.clone(), ex.store.bytes(e).into_owned()))
        .collect()
}

#[test]
fn round_trips_are_byte_stable() {
    let dir = tempfile::tempdir().unwrap();
    for (src, tag) in [
        ("classifier/discriminator.pt", "disc"),
        ("classifier/discriminator_cond_legacy.pt", "legacy"),
        ("nets/edm_ncsnpp_r16_uncond/network-snapshot-000000.pkl", "snap"),
    ] {
        let src = fixture(src);
        let original = data_of(&src);
        // Same file names in two folders: the .pt archive folder is the file stem.
        let (d1, d2) = (
            dir.path().join(format!("{tag}-1")),
            dir.path().join(format!("{tag}-2")),
        );
        std::fs::create_dir_all(&d1).unwrap();
        std::fs::create_dir_all(&d2).unwrap();
        let (p1, s1) = (
            d1.join(format!("{tag}.pt")),
            d1.join(format!("{tag}.safetensors")),
        );
        let (p2, s2) = (
            d2.join(format!("{tag}.pt")),
            d2.join(format!("{tag}.safetensors")),
        );
        convert::convert_file(&src, &p1, &Selection::default(), &no_progress).unwrap();
        convert::convert_file(&p1, &s1, &Selection::default(), &no_progress).unwrap();
        convert::convert_file(&s1, &p2, &Selection::default(), &no_progress).unwrap();
        convert::convert_file(&p2, &s2, &Selection::default(), &no_progress).unwrap();
        for f in [&p1, &s1, &p2, &s2] {
            assert_eq!(
                data_of(f),
                original,
                "{}: tensors differ from the source",
                f.display()
            );
        }
        // .pt output is a deterministic function of the tensors.
        assert_eq!(
            std::fs::read(&p1).unwrap(),
            std::fs::read(&p2).unwrap(),
            "{tag}: .pt bytes differ"
        );
        // safetensors data sections are identical (headers differ only in the source name/sha).
        let data_section = |p: &std::path::Path| {
            let b = std::fs::read(p).unwrap();
            let n = u64::from_le_bytes(b[..8].try_into().unwrap()) as usize;
            b[8 + n..].to_vec()
        };
        assert_eq!(
            data_section(&s1),
            data_section(&s2),
            "{tag}: safetensors data differ"
        );
        println!(
            "{tag}: pt -> safetensors -> pt -> safetensors byte-stable ({} tensors)",
            original.len()
        );
    }
}

#[test]
fn safetensors_metadata_carries_config_and_source() {
    let dir = tempfile::tempdir().unwrap();
    let src = fixture("nets/edm_ddpmpp_r8_cond10/network-snapshot-000000.pkl");
    let out = dir.path().join("net.safetensors");
    let r = convert::convert_file(&src, &out, &Selection::default(), &no_progress).unwrap();
    assert_eq!(r.source_sha256, convert::sha256_file(&src).unwrap());
    let ck = open(&out).unwrap();
    let (_, meta) = ck.safetensors.as_ref().unwrap();
    assert_eq!(meta["tiw.source_sha256"], r.source_sha256);
    assert_eq!(meta["tiw.source"], "network-snapshot-000000.pkl");
    assert_eq!(meta["tiw.kind"], "edm-snapshot:ema");
    assert!(meta["tiw.converter"].starts_with("tiw-converters "));
    let ex = ck.extract(&Selection::default()).unwrap();
    let cfg = ex.config.unwrap();
    assert_eq!(
        cfg.get("init_kwargs").unwrap().get("label_dim"),
        Some(&Json::Int(10))
    );
    assert_eq!(
        cfg.get("attributes").unwrap().get("sigma_max"),
        Some(&Json::Float(f64::INFINITY))
    );
    // state_dict order survives safetensors' dtype/name sorting
    let order: Vec<String> = ex.store.entries().iter().map(|e| e.name.clone()).collect();
    let reference: Vec<String> = read_npz(&fixture("nets/edm_ddpmpp_r8_cond10/state_dict.npz"))
        .into_iter()
        .map(|a| a.name)
        .collect();
    assert_eq!(order, reference);
}

#[test]
fn snapshot_other_modules_and_selection_errors() {
    let src = fixture("nets/edm_ddpmpp_r16_uncond/network-snapshot-000000.pkl");
    let ck = open(&src).unwrap();
    let aug = ck
        .extract(&Selection {
            key: Some("augment_pipe".into()),
            what: What::Net,
        })
        .unwrap();
    assert!(
        aug.store.entries().iter().all(|e| !e.is_parameter),
        "augment pipe has only buffers"
    );
    let err = ck
        .extract(&Selection {
            key: Some("nope".into()),
            what: What::Net,
        })
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("no top-level \"nope\"") && err.contains("ema"),
        "{err}"
    );
    let sd = open(&fixture("classifier/discriminator.pt")).unwrap();
    let err = sd
        .extract(&Selection {
            key: Some("ema".into()),
            what: What::Net,
        })
        .unwrap_err()
        .to_string();
    assert!(err.contains("--key applies to EDM snapshots"), "{err}");
}
