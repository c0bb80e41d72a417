//! Value indirections shared by the YAML file and the authentik environment:
//! `env://NAME` reads another environment variable, `file:///path` reads a file; anything
//! else is the value itself. Read once at start-up, never per request.

/// Resolves `env://` and `file://` indirections.
pub fn resolve_indirection(value: &str) -> Result<String, String> {
    if let Some(name) = value.strip_prefix("env://") {
        return std::env::var(name).map_err(|_| format!("environment variable {name} is not set"));
    }
    if let Some(path) = value.strip_prefix("file://") {
        return std::fs::read_to_string(path)
            .map(|s| s.trim_end_matches(['\n', '\r']).to_string())
            .map_err(|e| format!("cannot read {path}: {e}"));
    }
    Ok(value.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_values_pass_through() {
        assert_eq!(resolve_indirection("abc").unwrap(), "abc");
    }

    #[test]
    fn file_values_are_read_and_trimmed() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s");
        std::fs::write(&p, "from-file\n").unwrap();
        assert_eq!(
            resolve_indirection(&format!("file://{}", p.display())).unwrap(),
            "from-file"
        );
        assert!(resolve_indirection("file:///nonexistent/x").is_err());
    }

    #[test]
    fn env_values_are_read() {
        // PATH is always set in a test process; we never set variables (not thread-safe).
        assert!(!resolve_indirection("env://PATH").unwrap().is_empty());
        assert!(resolve_indirection("env://AK_OUTPOST_SURELY_UNSET_VAR").is_err());
    }
}
