//! The rule for a testbed's name (`name:` in a topology file, and every
//! name that reaches a path or a namespace through it): pure, below the
//! state directory that uses it.

/// The longest testbed name: it prefixes every namespace (`tb-NAME.`) and
/// must leave room in interface and file names.
pub const NAME_MAX: usize = 12;

/// What is wrong with a testbed name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{name}` is not a testbed name: it {why}")]
pub struct NameError {
    /// The name as given.
    pub name: String,
    /// What is wrong with it.
    pub why: String,
}

impl NameError {
    /// The rule, for a help line.
    pub const RULE: &'static str =
        "a testbed name is 1-12 characters of a-z, 0-9 and `-`, starting with a letter";
}

/// Checks a testbed name against the rule; says what is wrong.
pub fn check_name(name: &str) -> Result<(), NameError> {
    let why = if name.is_empty() {
        "is empty".to_string()
    } else if name.chars().count() > NAME_MAX {
        format!(
            "is {} characters long, more than {NAME_MAX}",
            name.chars().count()
        )
    } else if !name.starts_with(|c: char| c.is_ascii_lowercase()) {
        "does not start with a lowercase letter".to_string()
    } else if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
    {
        format!("contains `{}`", c.escape_default())
    } else {
        return Ok(());
    };
    Err(NameError {
        name: name.escape_default().to_string(),
        why,
    })
}
