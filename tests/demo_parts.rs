//! The demo's independent parts: procedural dataset, probe classifier, report.

use std::time::Instant;

use tiw::demo::probe::{Probe, ProbeConfig, FEATURE_DIM};
use tiw::demo::report::{self, ModelSamples, ReportInputs};
use tiw::demo::shapes::{self, DemoSizes, IMAGE_BYTES, NUM_CLASSES};

#[test]
fn dataset_is_deterministic_and_seed_dependent() {
    let (a, la) = shapes::generate(&[5, 4, 3, 2], 7);
    let (b, lb) = shapes::generate(&[5, 4, 3, 2], 7);
    let (c, lc) = shapes::generate(&[5, 4, 3, 2], 8);
    assert_eq!(a.len(), 14 * IMAGE_BYTES);
    assert_eq!((a.clone(), la.clone()), (b, lb), "same seed, same bytes");
    assert_ne!(a, c, "different seed, different images");
    let mut sorted = la.clone();
    sorted.sort();
    let mut sorted_c = lc;
    sorted_c.sort();
    assert_eq!(sorted, sorted_c);
    assert_eq!(sorted, [0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 3, 3]);
    // the order is shuffled, not grouped by class
    assert_ne!(la, sorted);
    // anti-aliased: not just a handful of distinct values; spans a real range
    let distinct = a.iter().collect::<std::collections::BTreeSet<_>>().len();
    println!("distinct byte values in 14 images: {distinct}");
    assert!(distinct > 150, "{distinct}");
}

#[test]
fn classes_differ_in_colour() {
    // mean colour of the brightest pixels per class follows the class colour
    let (im, lab) = shapes::generate(&[50, 50, 50, 50], 3);
    let mut mean = [[0f64; 3]; NUM_CLASSES];
    let mut n = [0f64; NUM_CLASSES];
    for (i, &l) in lab.iter().enumerate() {
        for px in im[i * IMAGE_BYTES..(i + 1) * IMAGE_BYTES].chunks(3) {
            let m = *px.iter().max().unwrap() as f64;
            if m > 170.0 {
                for (acc, &v) in mean[l as usize].iter_mut().zip(px) {
                    *acc += v as f64;
                }
                n[l as usize] += 1.0;
            }
        }
    }
    for (k, (m, count)) in mean.iter_mut().zip(n).enumerate() {
        m.iter_mut().for_each(|v| *v /= count);
        println!("class {k} ({}): bright-pixel mean {m:?}", shapes::CLASS_NAMES[k]);
    }
    assert!(mean[0][0] > mean[0][1] + 80.0 && mean[0][0] > mean[0][2] + 80.0);
    assert!(mean[1][1] > mean[1][0] + 80.0 && mean[1][1] > mean[1][2] + 80.0);
    assert!(mean[2][2] > mean[2][0] + 80.0 && mean[2][2] > mean[2][1] + 80.0);
    assert!(mean[3][0] > mean[3][2] + 80.0 && mean[3][1] > mean[3][2] + 80.0);
}

#[test]
fn demo_sets_have_requested_frequencies() {
    let sizes = DemoSizes {
        probe_train_per_class: 10,
        probe_test_per_class: 10,
        frechet_ref_per_class: 10,
        ..DemoSizes::default()
    };
    let d = shapes::demo_sets(&sizes, 0);
    assert_eq!(d.biased.len(), 4000);
    assert_eq!(d.biased.class_counts(), [2797, 839, 280, 84]);
    let p = d.biased.class_proportions();
    let w: f64 = shapes::LONG_TAIL_WEIGHTS.iter().sum();
    for (k, (pk, wk)) in p.iter().zip(shapes::LONG_TAIL_WEIGHTS).enumerate() {
        let want = wk / w;
        assert!((pk - want).abs() < 1e-3, "class {k}: {pk} vs {want}");
    }
    assert_eq!(d.reference.class_counts(), [50; 4]);
    assert_eq!(d.probe_train.class_counts(), [10; 4]);
    assert_eq!(d.frechet_ref.class_counts(), [10; 4]);
    let obs = d.observed();
    assert_eq!(obs.len(), 4200);
    assert_eq!(obs.class_counts(), [2847, 889, 330, 134]);
    // independent streams: reference and Fréchet sets are different images
    assert_ne!(
        d.reference.images[..IMAGE_BYTES],
        d.frechet_ref.images[..IMAGE_BYTES]
    );
    // and the whole thing is a function of the seed
    let d2 = shapes::demo_sets(&sizes, 0);
    assert_eq!(d.biased, d2.biased);
    assert_eq!(d.frechet_ref, d2.frechet_ref);
}

fn trained_probe() -> (Probe, f64, f64) {
    let train = shapes::generate_set(&[500; 4], 11);
    let test = shapes::generate_set(&[250; 4], 12);
    let t0 = Instant::now();
    let mut p = Probe::new(tch::Device::Cpu, 0);
    let s = p.train(&train, &ProbeConfig::default()).unwrap();
    let secs = t0.elapsed().as_secs_f64();
    let acc = p.accuracy(&test).unwrap();
    println!(
        "probe: {} steps, last-epoch loss {:.4}, trained in {secs:.1} s, held-out accuracy {:.2}% (1000 images)",
        s.steps,
        s.last_epoch_loss,
        100.0 * acc
    );
    (p, acc, secs)
}

#[test]
fn probe_learns_the_classes_and_round_trips() {
    let (p, acc, _) = trained_probe();
    assert!(acc >= 0.95, "held-out accuracy {acc}");
    let test = shapes::generate_set(&[20; 4], 13);
    let x = tiw::demo::probe::images_tensor(&test.images, tch::Device::Cpu).unwrap();
    let f = p.features(&x).unwrap();
    assert_eq!(f.len(), 80 * FEATURE_DIM);
    let pred = p.predict(&x).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("probe.safetensors");
    p.save(&path).unwrap();
    let q = Probe::load(&path, tch::Device::Cpu).unwrap();
    assert_eq!(q.predict(&x).unwrap(), pred);
    assert_eq!(q.features(&x).unwrap(), f);
    // bad inputs are errors, not panics
    let bad = dir.path().join("bad.safetensors");
    std::fs::write(&bad, b"not a weights file").unwrap();
    let e = Probe::load(&bad, tch::Device::Cpu).unwrap_err();
    println!("{e:#}");
    assert!(format!("{e:#}").contains("bad.safetensors"));
    assert!(p
        .predict(&tch::Tensor::zeros(
            [2, 3, 8, 8],
            (tch::Kind::Float, tch::Device::Cpu)
        ))
        .is_err());
    assert!(p.predict_images(&[0u8; 100]).is_err());
}

#[test]
fn tv_and_frechet_on_hand_made_inputs() {
    assert!((report::tv_to_uniform(&[1.0, 0.0, 0.0, 0.0]) - 0.75).abs() < 1e-15);
    assert_eq!(report::tv_to_uniform(&[0.25; 4]), 0.0);
    assert!((report::tv_to_uniform(&[0.5, 0.5, 0.0, 0.0]) - 0.5).abs() < 1e-15);
    assert!((report::tv_distance(&[0.7, 0.3], &[0.4, 0.6]) - 0.3).abs() < 1e-15);
    assert_eq!(
        report::proportions(&[0, 1, 1, 3], 4).unwrap(),
        vec![0.25, 0.5, 0.0, 0.25]
    );
    assert!(report::proportions(&[4], 4).is_err());
    // Fréchet: identical sets ≈ 0; a shift by c in every one of d dims adds d·c²
    let d = 3;
    let a: Vec<f64> = (0..40)
        .flat_map(|i| {
            let t = i as f64;
            [t.sin(), (1.3 * t).cos(), 0.1 * t - 2.0]
        })
        .collect();
    let fd0 = report::frechet_of_features(&a, &a, d).unwrap();
    println!("FD(identical) = {fd0:e}");
    assert!(fd0.abs() < 1e-9, "{fd0}");
    let b: Vec<f64> = a.iter().map(|v| v + 0.5).collect();
    let fd1 = report::frechet_of_features(&a, &b, d).unwrap();
    println!("FD(shift 0.5 in 3 dims) = {fd1} (want 0.75)");
    assert!((fd1 - 0.75).abs() < 1e-9, "{fd1}");
    // scaling one axis by 2: Σ₂ = diag(4,1,1)·Σ₁ for a diagonal-ish case → check against the formula
    // on exactly diagonal covariances: FD = Σ (s1 − s2)² over standard deviations
    let x: Vec<f64> = (0..4)
        .flat_map(|i| match i {
            0 => [1.0, 0.0],
            1 => [-1.0, 0.0],
            2 => [0.0, 1.0],
            _ => [0.0, -1.0],
        })
        .collect();
    let y: Vec<f64> = x.chunks(2).flat_map(|r| [2.0 * r[0], r[1]]).collect();
    let fd2 = report::frechet_of_features(&x, &y, 2).unwrap();
    // var = 2/3 per axis for x; y's first axis var = 8/3: (√(8/3) − √(2/3))² = 2/3
    println!("FD(axis scaled ×2) = {fd2} (want {})", 2.0 / 3.0);
    assert!((fd2 - 2.0 / 3.0).abs() < 1e-9, "{fd2}");
    assert!(report::frechet_of_features(&a, &a[..5], d).is_err());
}

#[test]
fn report_files_are_written_and_well_formed() {
    let (probe, acc, _) = {
        // a briefly trained probe is enough for the plumbing
        let train = shapes::generate_set(&[100; 4], 21);
        let mut p = Probe::new(tch::Device::Cpu, 1);
        p.train(
            &train,
            &ProbeConfig {
                epochs: 2,
                ..ProbeConfig::default()
            },
        )
        .unwrap();
        let acc = p.accuracy(&shapes::generate_set(&[25; 4], 22)).unwrap();
        (p, acc, 0.0)
    };
    let observed = shapes::generate_set(&[60, 20, 8, 4], 23);
    let reference = shapes::generate_set(&[30; 4], 24);
    // three "models": a biased one, a balanced one, a mostly-one-class one; 64 samples each
    let models = vec![
        ModelSamples {
            name: "dsm".into(),
            images: shapes::generate(&[40, 14, 7, 3], 25).0,
        },
        ModelSamples {
            name: "tiw-dsm (corrected)".into(),
            images: shapes::generate(&[16; 4], 26).0,
        },
        ModelSamples {
            name: "tiw-official".into(),
            images: shapes::generate(&[61, 1, 1, 1], 27).0,
        },
    ];
    let inputs = ReportInputs {
        title: "test report".into(),
        seed: 5,
        settings: vec![("steps".into(), "0".into())],
        target_proportions: vec![0.25; 4],
        data_proportions: observed.class_proportions().to_vec(),
        data_images: Some(observed.images.clone()),
        reference_images: reference.images.clone(),
        models,
        baseline: Some("dsm".into()),
        probe_accuracy: acc,
        discriminator_accuracy: vec![(0.1, 0.8), (1.0, 0.6), (10.0, 0.5)],
        stage_seconds: vec![("data".into(), 0.1), ("train".into(), 1.0)],
        total_seconds: 1.1,
        bootstrap: 50,
    };
    let dir = tempfile::tempdir().unwrap();
    let (rep, files) = report::write(&inputs, &probe, dir.path()).unwrap();
    for p in [&files.markdown, &files.json, &files.chart]
        .into_iter()
        .chain(&files.grids)
    {
        assert!(std::fs::metadata(p).unwrap().len() > 0, "{}", p.display());
    }
    assert!(files.grids[1].ends_with("samples_tiw-dsm__corrected_.png"));
    let grid = image::open(&files.grids[0]).unwrap();
    assert_eq!(
        (grid.width(), grid.height()),
        (2 * (8 * 17 + 1), 2 * (8 * 17 + 1))
    );
    let chart = image::open(&files.chart).unwrap().to_rgb8();
    assert_eq!(chart.dimensions(), (640, 320));
    assert!(
        chart.pixels().any(|p| p.0 == [31, 119, 180]),
        "first model's bar colour drawn"
    );
    let md = std::fs::read_to_string(&files.markdown).unwrap();
    println!("{md}");
    assert!(md.contains("| dsm | 64 |") && md.contains("Paired differences to dsm"));
    let j: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&files.json).unwrap()).unwrap();
    for key in [
        "schema",
        "title",
        "seed",
        "settings",
        "classes",
        "target_proportions",
        "data",
        "probe",
        "discriminator",
        "models",
        "baseline",
        "paired",
        "timings_s",
        "total_s",
        "files",
    ] {
        assert!(j.get(key).is_some(), "report.json lacks {key}");
    }
    assert_eq!(j["schema"], report::SCHEMA);
    assert_eq!(j["models"].as_array().unwrap().len(), 3);
    for m in j["models"].as_array().unwrap() {
        for key in [
            "name",
            "num_samples",
            "counts",
            "proportions",
            "tv_to_uniform",
            "frechet",
            "samples_png",
        ] {
            assert!(m.get(key).is_some(), "model entry lacks {key}");
        }
        let p: f64 = m["proportions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .sum();
        assert!((p - 1.0).abs() < 1e-12);
    }
    assert_eq!(j["paired"].as_array().unwrap().len(), 2);
    for key in [
        "model",
        "baseline",
        "delta_tv",
        "delta_tv_ci95",
        "delta_frechet",
        "delta_frechet_ci95",
        "frechet_ratio",
    ] {
        assert!(j["paired"][0].get(key).is_some(), "paired entry lacks {key}");
    }
    assert_eq!(j["discriminator"]["heldout_accuracy"][1]["sigma"], 1.0);
    // the numbers follow the inputs: balanced samples have low TV, the one-class set high
    let tv = |i: usize| rep.models[i].tv_to_uniform;
    println!(
        "TV: dsm {:.3}, balanced {:.3}, one-class {:.3}; probe acc {acc:.3}",
        tv(0),
        tv(1),
        tv(2)
    );
    assert!(tv(1) < tv(0) && tv(0) < tv(2));
    assert!(rep.paired[0].delta_tv < 0.0);
    let (lo, hi) = rep.paired[0].delta_tv_ci95.unwrap();
    assert!(lo <= rep.paired[0].delta_tv + 0.05 && hi >= lo);
    assert!(rep.models[1].frechet.unwrap() < rep.models[2].frechet.unwrap());
    // a baseline that is not a model is an error
    let bad = ReportInputs {
        baseline: Some("nope".into()),
        ..inputs
    };
    assert!(report::compute(&bad, &probe).is_err());
}

#[test]
fn probe_training_is_reproducible() {
    let train = shapes::generate_set(&[50; 4], 31);
    let x = tiw::demo::probe::images_tensor(&shapes::generate(&[5; 4], 32).0, tch::Device::Cpu).unwrap();
    let run = |seed: u64| {
        let mut p = Probe::new(tch::Device::Cpu, seed);
        let cfg = ProbeConfig {
            epochs: 1,
            seed,
            ..ProbeConfig::default()
        };
        let s = p.train(&train, &cfg).unwrap();
        (s.last_epoch_loss, p.features(&x).unwrap())
    };
    let (a, b, c) = (run(3), run(3), run(4));
    assert_eq!(a, b, "same seed, same probe");
    assert_ne!(a.1, c.1, "different seed, different probe");
}
