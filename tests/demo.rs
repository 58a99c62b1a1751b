//! `tiw demo --quick`: the whole pipeline (data → discriminator → three score models →
//! ONNX Runtime samples → probe → report) runs and writes a well-formed report. The
//! scientific outcome is the full demo's business, not this test's.

use std::process::Command;

#[test]
fn quick_demo_writes_a_well_formed_report() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("demo");
    let t0 = std::time::Instant::now();
    let r = Command::new(env!("CARGO_BIN_EXE_tiw-full"))
        .args(["demo", "--quick", "--quiet", "--threads", "2", "--outdir"])
        .arg(&out)
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&r.stderr);
    assert!(r.status.success(), "{log}");
    println!("quick demo: {:.1} s\n{log}", t0.elapsed().as_secs_f64());
    for stage in ["[1/5]", "[2/5]", "[3/5]", "[4/5]", "[5/5]", "total"] {
        assert!(log.contains(stage), "stage {stage} missing from the output");
    }
    // every score model's loss went down (first tick vs last tick)
    let ticks: Vec<Vec<f64>> = log
        .lines()
        .filter_map(|l| l.trim().strip_prefix("loss per tick "))
        .map(|l| {
            l.trim_matches(|c| c == '[' || c == ']')
                .split(", ")
                .map(|x| x.parse().unwrap())
                .collect()
        })
        .collect();
    assert_eq!(ticks.len(), 3, "{log}");
    for t in &ticks {
        assert!(
            t.last().unwrap() < t.first().unwrap(),
            "loss did not decrease: {t:?}"
        );
    }
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    let models = json["models"].as_array().unwrap();
    let names: Vec<&str> = models.iter().map(|m| m["name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        [
            "DSM",
            "TIW-DSM official",
            "TIW-DSM corrected",
            "TIW-DSM corrected + DG"
        ]
    );
    for m in models {
        let p: Vec<f64> = m["proportions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect();
        assert_eq!(p.len(), 4);
        assert!((p.iter().sum::<f64>() - 1.0).abs() < 1e-9, "{p:?}");
        let tv = m["tv_to_uniform"].as_f64().unwrap();
        assert!((0.0..=0.75).contains(&tv));
        assert!(m["frechet"].as_f64().unwrap().is_finite());
        assert_eq!(m["num_samples"], 64);
        let png = out.join(m["samples_png"].as_str().unwrap());
        image::open(&png).unwrap_or_else(|e| panic!("{}: {e}", png.display()));
    }
    let paired = json["paired"].as_array().unwrap();
    assert_eq!(paired.len(), 3, "official, corrected and corrected + DG vs DSM");
    let data_p: f64 = json["data"]["proportions"][0].as_f64().unwrap();
    assert!(
        data_p > 0.5,
        "the observed data is long-tailed (class 0: {data_p})"
    );
    assert_eq!(
        json["discriminator"]["heldout_accuracy"]
            .as_array()
            .unwrap()
            .len(),
        4
    );
    assert!(json["probe"]["heldout_accuracy"].as_f64().unwrap() > 0.9);
    assert!(json["timings_s"].as_object().unwrap().len() >= 6);
    image::open(out.join("class_proportions.png")).unwrap();
    // the SVG chart explains itself: title, axis label, ticks, class names and a legend entry per series
    let svg = std::fs::read_to_string(out.join("class_proportions.svg")).unwrap();
    for text in [
        "Class proportions",
        "fraction of images in the class",
        ">0.3<",
        "red disc",
        "data (observed)",
        "TIW-DSM corrected + DG",
    ] {
        assert!(svg.contains(text), "class_proportions.svg lacks {text:?}");
    }
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(md.contains("TIW-DSM corrected") && md.contains("DSM"));
    // the pipeline's own files, in the formats the real tools read
    assert!(out.join("data/observed.zip").is_file());
    assert!(out.join("data/reference.npz").is_file() && out.join("data/biased.npz").is_file());
    assert!(out.join("extractor.pt").is_file());

    // fixed seeds: a second run gives the same numbers (timings aside) and the same samples
    let out2 = dir.path().join("demo2");
    let r = Command::new(env!("CARGO_BIN_EXE_tiw-full"))
        .args(["demo", "--quick", "--quiet", "--threads", "2", "--outdir"])
        .arg(&out2)
        .output()
        .unwrap();
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let strip = |p: &std::path::Path| {
        let mut v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap();
        let o = v.as_object_mut().unwrap();
        o.remove("timings_s");
        o.remove("total_s");
        v
    };
    assert_eq!(strip(&out.join("report.json")), strip(&out2.join("report.json")));
    assert_eq!(
        std::fs::read(out.join("samples_DSM.png")).unwrap(),
        std::fs::read(out2.join("samples_DSM.png")).unwrap()
    );
}
