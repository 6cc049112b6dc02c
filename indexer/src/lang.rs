//! The languages nib parses, each with its tree-sitter grammar and the grammar's own tags query
//! (the query GitHub's code navigation uses: `@definition.*` captures with a `@name`).

use std::path::Path;
use tree_sitter::Language;

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub enum Lang {
    Rust,
    Python,
    JavaScript,
    TypeScript,
    Tsx,
    Go,
    Java,
    C,
    Cpp,
}

impl Lang {
    pub const ALL: [Lang; 9] = [
        Lang::Rust,
        Lang::Python,
        Lang::JavaScript,
        Lang::TypeScript,
        Lang::Tsx,
        Lang::Go,
        Lang::Java,
        Lang::C,
        Lang::Cpp,
    ];

    /// The language of a file, from its extension, else from a `#!` line in `head`.
    pub fn detect(path: &Path, head: &str) -> Option<Lang> {
        let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
        let by_ext = match ext {
            "rs" => Some(Lang::Rust),
            "py" | "pyi" => Some(Lang::Python),
            "js" | "mjs" | "cjs" | "jsx" => Some(Lang::JavaScript),
            "ts" | "mts" | "cts" => Some(Lang::TypeScript),
            "tsx" => Some(Lang::Tsx),
            "go" => Some(Lang::Go),
            "java" => Some(Lang::Java),
            "c" | "h" => Some(Lang::C),
            "cc" | "cpp" | "cxx" | "hpp" | "hh" | "hxx" => Some(Lang::Cpp),
            _ => None,
        };
        by_ext.or_else(|| {
            let first = head.lines().next()?.strip_prefix("#!")?;
            if first.contains("python") {
                Some(Lang::Python)
            } else if first.contains("node") || first.contains("deno") {
                Some(Lang::JavaScript)
            } else {
                None
            }
        })
    }

    /// The LSP language id of this language.
    pub fn from_language_id(id: &str) -> Option<Lang> {
        Some(match id {
            "rust" => Lang::Rust,
            "python" => Lang::Python,
            "javascript" | "javascriptreact" => Lang::JavaScript,
            "typescript" => Lang::TypeScript,
            "typescriptreact" => Lang::Tsx,
            "go" => Lang::Go,
            "java" => Lang::Java,
            "c" => Lang::C,
            "cpp" => Lang::Cpp,
            _ => return None,
        })
    }

    /// The editor's (LSP) language identifier, the inverse of [`Lang::from_language_id`].
    pub fn language_id(self) -> &'static str {
        match self {
            Lang::JavaScript => "javascript",
            Lang::Tsx => "typescriptreact",
            other => other.name(),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Lang::Rust => "rust",
            Lang::Python => "python",
            Lang::JavaScript => "javascript",
            Lang::TypeScript => "typescript",
            Lang::Tsx => "tsx",
            Lang::Go => "go",
            Lang::Java => "java",
            Lang::C => "c",
            Lang::Cpp => "cpp",
        }
    }

    pub fn grammar(self) -> Language {
        match self {
            Lang::Rust => tree_sitter_rust::LANGUAGE.into(),
            Lang::Python => tree_sitter_python::LANGUAGE.into(),
            Lang::JavaScript => tree_sitter_javascript::LANGUAGE.into(),
            Lang::TypeScript => tree_sitter_typescript::LANGUAGE_TYPESCRIPT.into(),
            Lang::Tsx => tree_sitter_typescript::LANGUAGE_TSX.into(),
            Lang::Go => tree_sitter_go::LANGUAGE.into(),
            Lang::Java => tree_sitter_java::LANGUAGE.into(),
            Lang::C => tree_sitter_c::LANGUAGE.into(),
            Lang::Cpp => tree_sitter_cpp::LANGUAGE.into(),
        }
    }

    /// The grammar's tags query. TypeScript's extends JavaScript's, as in tree-sitter's own
    /// configuration; C++'s adds to C's.
    pub fn tags_query(self) -> String {
        match self {
            Lang::Rust => format!("{}\n{RUST_EXTRA}", tree_sitter_rust::TAGS_QUERY),
            Lang::Python => format!("{}\n{PYTHON_EXTRA}", tree_sitter_python::TAGS_QUERY),
            Lang::JavaScript => tree_sitter_javascript::TAGS_QUERY.to_string(),
            Lang::TypeScript | Lang::Tsx => format!(
                "{}\n{}",
                tree_sitter_javascript::TAGS_QUERY,
                tree_sitter_typescript::TAGS_QUERY
            ),
            Lang::Go => tree_sitter_go::TAGS_QUERY.to_string(),
            Lang::Java => tree_sitter_java::TAGS_QUERY.to_string(),
            Lang::C => tree_sitter_c::TAGS_QUERY.to_string(),
            Lang::Cpp => format!(
                "{}\n{}",
                tree_sitter_c::TAGS_QUERY,
                tree_sitter_cpp::TAGS_QUERY
            ),
        }
    }

    /// How a line comment starts (doc comments above a definition are kept with it).
    pub fn line_comment(self) -> &'static str {
        match self {
            Lang::Python => "#",
            _ => "//",
        }
    }
}

/// Definitions the grammar's tags query leaves out.
const RUST_EXTRA: &str = r#"
(const_item name: (identifier) @name) @definition.constant
(static_item name: (identifier) @name) @definition.constant
(function_signature_item name: (identifier) @name) @definition.method
"#;
const PYTHON_EXTRA: &str = r#"
(module (expression_statement (assignment left: (identifier) @name) @definition.constant))
"#;

/// A finer kind than the tags query's, from the definition node's own kind.
pub fn refine_kind(node_kind: &str, tags_kind: &str) -> crate::symbols::Kind {
    let kind = match node_kind {
        "struct_item" | "struct_specifier" | "struct_type" => "struct",
        "enum_item" | "enum_specifier" | "enum_declaration" => "enum",
        "union_item" | "union_specifier" => "union",
        "trait_item" => "trait",
        "type_item" | "type_alias_declaration" | "type_spec" | "type_definition" => "type",
        "const_item" | "static_item" => "constant",
        "mod_item" => "module",
        "macro_definition" => "macro",
        _ => tags_kind,
    };
    crate::symbols::Kind::new(kind)
}
