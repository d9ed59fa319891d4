//! The one rule for names users give berth's objects (sandboxes, agents, API keys, process
//! ids): Docker's, `[a-zA-Z0-9][a-zA-Z0-9_.-]*`, at most 64 long. Such a name is safe as a file
//! name, a label value and a path segment of the HTTP API.

/// The longest name accepted.
pub const MAX_NAME: usize = 64;

/// Whether `name` follows the rule.
pub fn is_valid(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes.next().is_some_and(|b| b.is_ascii_alphanumeric())
        && name.len() <= MAX_NAME
        && bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// What is wrong with `name`, as "<what> name "a/b" is not valid: …, e.g. <example>".
pub fn check(what: &str, name: &str, example: &str) -> Result<(), String> {
    if is_valid(name) {
        Ok(())
    } else {
        Err(format!(
            "{what} {name:?} is not valid: use 1-{MAX_NAME} letters, digits, '_', '.' or '-', starting with a letter or digit, e.g. {example}"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn follows_dockers_rule() {
        for good in ["a", "web-1", "A.b_c", "0", &"x".repeat(64)] {
            assert!(is_valid(good), "{good}");
        }
        for bad in [
            "",
            "a/b c",
            "-a",
            ".a",
            "_a",
            "a b",
            "a/b",
            "é",
            &"x".repeat(65),
            "a\0",
        ] {
            assert!(!is_valid(bad), "{bad}");
        }
    }

    #[test]
    fn the_message_names_the_value_and_an_example() {
        let e = check("sandbox name", "a/b c", "web-1").unwrap_err();
        assert!(e.contains("\"a/b c\"") && e.contains("e.g. web-1"), "{e}");
    }
}
