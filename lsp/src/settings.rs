//! The server's settings, as sent in `initializationOptions` and `workspace/didChangeConfiguration`
//! (either flat or under a `nib` key). Every field is optional; unknown fields are ignored, and a
//! field of the wrong type is reported and ignored, never fatal.

use crate::completer::{CompleterConfig, Multiline};
use crate::engine::EngineConfig;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Settings {
    /// GGUF file; default `$NIB_MODEL`, else the model `nib model pull` fetched.
    pub model: Option<PathBuf>,
    /// `cpu`, `cuda`, `metal`, or `remote` (with `remote_url`).
    pub backend: String,
    /// Inference threads (read at start-up: `nib serve --threads` or this setting).
    pub threads: Option<usize>,
    /// Tokens generated at most for a one-line and for a multi-line suggestion.
    pub max_tokens: usize,
    pub max_tokens_multiline: usize,
    /// Milliseconds a request waits for more keystrokes before the model starts.
    pub debounce_ms: u64,
    /// `auto` (a block where one opens), `always` or `never`.
    pub multiline: String,
    /// Token budget of the text before the cursor, and of the text after it.
    pub context_tokens: usize,
    pub suffix_tokens: usize,
    /// Characters of other files put in the prompt, at most (see also
    /// [`Settings::own_file_chars`]).
    pub other_files_chars: usize,
    /// Suggest in the middle of a word when the rest of the line is more than closing characters.
    pub mid_word: bool,
    /// Token healing: the prompt's last token is written back by the model, so a cursor in
    /// the middle of a word or right after `.` gets the rest of the word (local models only).
    pub token_healing: bool,
    /// The lines just typed (12 and the cursor's line so far) are written after the prompt's
    /// middle marker, so that a keystroke recomputes a token or two, not the text after the
    /// cursor (local models only).
    pub line_in_middle: bool,
    /// Master switch, and per-language switches by LSP language id (`{"markdown": false}`).
    pub enable: bool,
    pub languages: HashMap<String, bool>,
    /// An inference server (OpenAI-compatible or llama.cpp `/infill`) and the name of the
    /// environment variable that holds its API key.
    pub remote_url: Option<String>,
    pub remote_api_key_env: Option<String>,
    /// The `model` field of OpenAI-compatible requests (vLLM and TGI want the served name).
    pub remote_model: Option<String>,
    /// A remote request that has not finished by then fails (milliseconds).
    pub remote_timeout_ms: u64,
}

impl Default for Settings {
    fn default() -> Self {
        let c = CompleterConfig::default();
        Self {
            model: None,
            backend: "cpu".into(),
            threads: None,
            max_tokens: c.max_tokens_single,
            max_tokens_multiline: c.max_tokens_multi,
            debounce_ms: EngineConfig::default().debounce.as_millis() as u64,
            multiline: "auto".into(),
            context_tokens: c.prefix_tokens,
            // The suffix follows the cursor in the prompt, so every keystroke recomputes it:
            // in the editor it is kept short (the one-shot CLI and the benchmarks use 256).
            suffix_tokens: 64,
            other_files_chars: 6000,
            mid_word: false,
            token_healing: c.token_healing,
            line_in_middle: c.line_in_middle,
            enable: true,
            languages: HashMap::new(),
            remote_url: None,
            remote_api_key_env: None,
            remote_model: None,
            remote_timeout_ms: 10_000,
        }
    }
}

impl Settings {
    /// Characters of the file's own text from outside the window near the cursor (its imports,
    /// stretches like the code at the cursor) that a prompt may carry: a quarter of the other
    /// files' budget, so that switching context off switches it off too.
    pub fn own_file_chars(&self) -> usize {
        self.other_files_chars / 4
    }

    /// Reads settings from a JSON value: `{...}` or `{"nib": {...}}`. Fields that do not parse
    /// keep their previous value and are named in the returned warnings.
    pub fn merged(&self, value: &serde_json::Value) -> (Settings, Vec<String>) {
        let obj = match value.get("nib") {
            Some(inner) => inner,
            None => value,
        };
        let mut warnings = Vec::new();
        let mut current = serde_json::to_value(self).unwrap_or_default();
        if let (Some(cur), Some(new)) = (current.as_object_mut(), obj.as_object()) {
            for (k, v) in new {
                let mut trial = cur.clone();
                trial.insert(k.clone(), v.clone());
                match serde_json::from_value::<Settings>(serde_json::Value::Object(trial)) {
                    Ok(_) => {
                        cur.insert(k.clone(), v.clone());
                    }
                    Err(e) => warnings.push(format!("setting `{k}` ignored: {e}")),
                }
            }
        }
        let mut s: Settings = serde_json::from_value(current).unwrap_or_else(|_| self.clone());
        if s.multiline.parse::<Multiline>().is_err() {
            warnings.push(format!(
                "setting `multiline` ignored: expected auto, always or never, not `{}`",
                s.multiline
            ));
            s.multiline = self.multiline.clone();
        }
        if s.backend.parse::<nib_model::BackendKind>().is_err() {
            warnings.push(format!(
                "setting `backend` ignored: unknown backend `{}`",
                s.backend
            ));
            s.backend = self.backend.clone();
        }
        if s.backend == "remote" {
            if let Err(e) = s.remote_config() {
                warnings.push(format!("setting `backend` ignored: {e}"));
                s.backend = if self.backend == "remote" {
                    "cpu".into()
                } else {
                    self.backend.clone()
                };
            }
        }
        (s, warnings)
    }

    /// The inference server that `backend: "remote"` sends completions to.
    pub fn remote_config(&self) -> Result<nib_model::remote::RemoteConfig, String> {
        let url = self
            .remote_url
            .as_deref()
            .ok_or("the remote backend needs `remoteUrl`, the inference server's URL")?;
        nib_model::remote::RemoteConfig::new(
            url,
            self.remote_model.clone(),
            self.remote_api_key_env.as_deref(),
            std::time::Duration::from_millis(self.remote_timeout_ms.max(1)),
        )
        .map_err(|e| e.to_string())
    }

    pub fn engine_config(&self) -> EngineConfig {
        EngineConfig {
            debounce: Duration::from_millis(self.debounce_ms),
            completer: CompleterConfig {
                prefix_tokens: self.context_tokens,
                suffix_tokens: self.suffix_tokens,
                max_tokens_single: self.max_tokens,
                max_tokens_multi: self.max_tokens_multiline,
                // A file just opened or a jump answers within about a second; the full
                // window follows in the background.
                prefill_deadline_ms: Some(1000.0),
                token_healing: self.token_healing,
                line_in_middle: self.line_in_middle,
                ..CompleterConfig::default()
            },
            ..EngineConfig::default()
        }
    }

    pub fn multiline_mode(&self) -> Multiline {
        self.multiline.parse().unwrap_or(Multiline::Auto)
    }

    pub fn enabled_for(&self, language_id: &str) -> bool {
        self.enable && self.languages.get(language_id).copied().unwrap_or(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The VS Code extension contributes every server setting, with the server's default: the
    /// extension sends the effective values, so a drifted default would override the server's.
    #[test]
    fn vscode_manifest_matches_the_server_settings() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../editors/vscode/package.json"
        );
        let manifest: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(path).expect("editors/vscode/package.json"),
        )
        .expect("package.json is JSON");
        let props = manifest["contributes"]["configuration"]["properties"]
            .as_object()
            .expect("contributes.configuration.properties");
        let defaults = serde_json::to_value(Settings::default()).unwrap();
        let defaults = defaults.as_object().unwrap();
        for (key, value) in defaults {
            let prop = props
                .get(&format!("nib.{key}"))
                .unwrap_or_else(|| panic!("package.json lacks the setting nib.{key}"));
            assert_eq!(&prop["default"], value, "default of nib.{key}");
        }
        for key in props.keys() {
            let name = key.strip_prefix("nib.").expect("settings live under nib.");
            assert!(
                defaults.contains_key(name) || name == "serverPath",
                "package.json contributes nib.{name}, which the server does not read"
            );
        }
    }

    #[test]
    fn settings_merge_field_by_field() {
        let base = Settings::default();
        let (s, w) = base.merged(&json!({"nib": {"maxTokens": 20, "debounceMs": 5}}));
        assert_eq!((s.max_tokens, s.debounce_ms), (20, 5));
        assert!(w.is_empty(), "{w:?}");
        // A bad field is reported and ignored; the good one next to it still applies.
        let (s2, w) = s.merged(&json!({"maxTokens": "lots", "multiline": "never"}));
        assert_eq!(s2.max_tokens, 20);
        assert_eq!(s2.multiline_mode(), Multiline::Never);
        assert_eq!(w.len(), 1, "{w:?}");
        let (s3, w) =
            s2.merged(&json!({"multiline": "sometimes", "languages": {"markdown": false}}));
        assert_eq!(s3.multiline_mode(), Multiline::Never);
        assert!(!s3.enabled_for("markdown") && s3.enabled_for("rust"));
        assert_eq!(w.len(), 1);
        // Not an object at all: nothing changes.
        assert_eq!(s3.merged(&json!(null)).0, s3);
    }
}
