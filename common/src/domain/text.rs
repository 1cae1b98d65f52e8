//! Text that may end up in a mail header or a one-line greeting.

/// Whether `text` has a control character (CR, LF, tab, NUL, …): such text cannot be a one-line
/// value (a name, a title), which may end up in a mail header.
pub fn has_control_characters(text: &str) -> bool {
    text.chars().any(char::is_control)
}

/// `text` with every control character replaced by a space, so it can never start a new line in
/// a mail header or a greeting, whatever reached the database.
pub fn one_line(text: &str) -> String {
    text.chars().map(|c| if c.is_control() { ' ' } else { c }).collect()
}
