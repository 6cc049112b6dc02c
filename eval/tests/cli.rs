//! `nib-eval` end to end with the real default model: a benchmark run writes its results and
//! reports, a second run resumes without redoing a task, and every benchmark goes through the
//! completion pipeline (repo-rust's nib condition really carries context from the crate's index);
//! llama.cpp's server answers the same tasks as the anchor, compared task by task.

use std::path::{Path, PathBuf};
use std::process::Command;

fn model() -> PathBuf {
    nib_model::fetch::model_from_env().expect(
        "the default model is needed: run `target/debug/nib model pull` (scripts/test.sh does)",
    )
}

/// `nib-eval ARGS --model MODEL` (a command that runs the model).
fn nib_eval(args: &[&str]) -> (String, String) {
    let model = model();
    let mut args = args.to_vec();
    args.extend(["--model", model.to_str().unwrap()]);
    nib_eval_plain(&args)
}

/// `nib-eval ARGS` from the repository root; stdout and stderr, after checking it succeeded.
fn nib_eval_plain(args: &[&str]) -> (String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_nib-eval"))
        .args(args)
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join(".."))
        .output()
        .expect("nib-eval runs");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert!(out.status.success(), "nib-eval {args:?} failed:\n{stderr}");
    (stdout, stderr)
}

fn summary(path: &Path) -> nib_eval::report::Summary {
    nib_eval::report::Summary::read(path).unwrap()
}

#[test]
fn santacoder_runs_resumes_and_reports() {
    let dir = tempfile::tempdir().unwrap();
    // The summary is named by the results file.
    let out = dir.path().join("santacoder-fim.jsonl");
    let out = out.to_str().unwrap();
    let args = [
        "santacoder-fim",
        "--shard",
        "0/600",
        "--limit",
        "4",
        "--out",
        out,
    ];
    let (stdout, _) = nib_eval(&args);
    assert!(
        stdout.contains("### SantaCoder FIM exact match (4 tasks, --shard 0/600 --limit 4)"),
        "{stdout}"
    );
    let s = summary(&dir.path().join("santacoder-fim.json"));
    assert_eq!(
        s.rows.last().map(|r| (r.label.as_str(), r.tasks)),
        Some(("all", 4))
    );
    assert!(dir.path().join("santacoder-fim.svg").exists());
    assert!(dir.path().join("santacoder-fim-latency.svg").exists());
    // The second run finds every task done.
    let (_, stderr) = nib_eval(&args);
    assert!(stderr.contains("4 already done, 0 to run"), "{stderr}");
    let json = dir.path().join("santacoder-fim.json");
    let json = json.to_str().unwrap();
    let (cmp, _) = nib_eval_plain(&["compare", json, json]);
    assert!(
        cmp.contains("| all | exact match |") && cmp.contains("+0.0"),
        "{cmp}"
    );
}

#[test]
fn humaneval_completions_are_executed() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("humaneval-single.jsonl");
    nib_eval(&[
        "humaneval-infill",
        "--limit",
        "2",
        "--out",
        out.to_str().unwrap(),
    ]);
    let text = std::fs::read_to_string(&out).unwrap();
    let rows: Vec<serde_json::Value> = text
        .lines()
        .skip(1)
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 2);
    for r in &rows {
        // Each completion went through python in the sandbox: passed or failed, never not run.
        assert!(
            r["verdict"] == "passed"
                || r["verdict"].get("failed").is_some()
                || r["verdict"] == "timed_out",
            "{r}"
        );
        assert!(!r["completion"].as_str().unwrap().is_empty(), "{r}");
    }
    assert_eq!(
        summary(&dir.path().join("humaneval-single.json")).rows[0].tasks,
        2
    );
}

#[test]
fn repo_rust_runs_three_conditions_on_a_real_crate() {
    let dir = tempfile::tempdir().unwrap();
    let list = dir.path().join("crates.txt");
    std::fs::write(&list, "ropey 1.6.1\n").unwrap();
    let out = dir.path().join("repo-rust.jsonl");
    let (stdout, _) = nib_eval(&[
        "repo-rust",
        "--crates",
        list.to_str().unwrap(),
        "--per-crate",
        "2",
        "--prefix-tokens",
        "256",
        "--suffix-tokens",
        "64",
        "--scratch",
        dir.path().join("scratch").to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(
        stdout.contains("Lift of nib's context over none"),
        "{stdout}"
    );
    let s = summary(&dir.path().join("repo-rust.json"));
    let labels: Vec<(&str, usize)> = s.rows.iter().map(|r| (r.label.as_str(), r.tasks)).collect();
    assert_eq!(labels, vec![("none", 2), ("nib", 2), ("oracle", 2)]);
    let rows: Vec<serde_json::Value> = std::fs::read_to_string(&out)
        .unwrap()
        .lines()
        .skip(1)
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let ctx = |c: &str| {
        rows.iter()
            .filter(|r| r["condition"] == c)
            .map(|r| r["context_chars"].as_u64().unwrap())
            .sum::<u64>()
    };
    assert_eq!(ctx("none"), 0);
    assert!(
        ctx("nib") > 0,
        "nib's context builder found nothing in ropey"
    );
    assert!(ctx("oracle") > 0);
}

fn llama_server() -> PathBuf {
    let path = std::env::var_os("NIB_LLAMA_SERVER")
        .map_or_else(nib_eval::anchor::default_llama_server, PathBuf::from);
    assert!(
        path.exists(),
        "llama-server is needed at {} (run scripts/get-llama-server.sh, or set NIB_LLAMA_SERVER)",
        path.display()
    );
    path
}

/// The anchor answers the same tasks through a real llama.cpp server; `compare` finds them
/// task by task, `--save` keeps the counts, and the README table gets llama.cpp's column.
#[test]
fn llama_cpp_answers_the_same_tasks_and_stands_beside_nib() {
    let dir = tempfile::tempdir().unwrap();
    let reports = dir.path();
    let server = llama_server();
    let (nib_out, llama_out) = (
        reports.join("humaneval-single.jsonl"),
        reports.join("humaneval-single-llama.jsonl"),
    );
    let run = ["humaneval-infill", "--limit", "3", "--out"];
    let llama_args = ["--llama-server", server.to_str().unwrap()];
    nib_eval(&[&run[..], &[llama_out.to_str().unwrap()], &llama_args].concat());
    nib_eval(&[&run[..], &[nib_out.to_str().unwrap()]].concat());

    let rows: Vec<serde_json::Value> = std::fs::read_to_string(&llama_out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows[0]["meta"]["model"]["anchor"], "llama.cpp /infill");
    assert_eq!(rows.len(), 4, "meta and three answers");
    assert!(
        rows[1..]
            .iter()
            .all(|r| r["verdict"] != serde_json::Value::Null),
        "every answer of llama.cpp is executed: {rows:?}"
    );

    let (a, b) = (
        reports.join("humaneval-single.json"),
        reports.join("humaneval-single-llama.json"),
    );
    let (cmp, _) = nib_eval_plain(&[
        "compare",
        b.to_str().unwrap(),
        a.to_str().unwrap(),
        "--save",
    ]);
    assert!(
        cmp.contains("Task by task, 3 tasks answered by both"),
        "{cmp}"
    );
    // Kept in the anchor's summary.
    assert!(summary(&b).versus.is_some_and(|v| v.contains("3 tasks")));

    let readme = reports.join("README.md");
    std::fs::write(
        &readme,
        "<!-- nib-eval:results -->\n<!-- /nib-eval:results -->\n",
    )
    .unwrap();
    nib_eval_plain(&[
        "readme",
        "--readme",
        readme.to_str().unwrap(),
        "--reports",
        reports.to_str().unwrap(),
        "humaneval-single",
    ]);
    let text = std::fs::read_to_string(&readme).unwrap();
    assert!(text.contains("| pass@1 | pass@1, llama.cpp |"), "{text}");
    assert!(text.contains("Task by task, 3 tasks"), "{text}");
}

/// `--anchor-rules` puts llama.cpp's text through nib's block limit and post-processing: on
/// multi-line tasks its raw text runs on past the block's end, the ruled one stops there.
#[test]
fn the_anchor_under_nibs_rules_ends_its_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let server = llama_server();
    let answers = |name: &str, rules: bool| -> Vec<serde_json::Value> {
        let out = dir.path().join(name);
        let mut args = vec![
            "humaneval-infill",
            "--kind",
            "multi",
            "--limit",
            "2",
            "--llama-server",
            server.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ];
        if rules {
            args.push("--anchor-rules");
        }
        nib_eval(&args);
        let rows: Vec<serde_json::Value> = std::fs::read_to_string(&out)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(rows[0]["meta"]["model"]["anchor_rules"], rules);
        rows[1..].to_vec()
    };
    let (raw, ruled) = (answers("raw.jsonl", false), answers("ruled.jsonl", true));
    let text = |r: &serde_json::Value| r["completion"].as_str().unwrap().to_string();
    let mut shorter = 0;
    for (r, k) in raw.iter().zip(&ruled) {
        assert_eq!(r["id"], k["id"]);
        let (r, k) = (text(r), text(k));
        assert!(
            k.len() <= r.len(),
            "the rules only end text:\n{k}\n---\n{r}"
        );
        shorter += usize::from(k.len() < r.len());
    }
    assert!(shorter > 0, "some raw answer runs past its block: {raw:?}");
}
