//! The HTML report.
use super::{Inputs, Run};
pub fn render(_inputs: &Inputs<'_>, _runs: &[Run]) -> String {
    String::new()
}
