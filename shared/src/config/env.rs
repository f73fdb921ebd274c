//! Reading variables: empty values count as unset, numbers and booleans are checked
//! against their range, and every error names its variable.

use std::time::Duration;

use super::ConfigError;

/// The variables, through a lookup (the process environment, or a map in tests).
pub struct Env<'a> {
    lookup: &'a dyn Fn(&str) -> Option<String>,
}

impl<'a> Env<'a> {
    pub fn new(lookup: &'a dyn Fn(&str) -> Option<String>) -> Self {
        Self { lookup }
    }

    /// The value, trimmed of nothing; `None` when unset or blank.
    pub fn get(&self, name: &str) -> Option<String> {
        (self.lookup)(name).filter(|v| !v.trim().is_empty())
    }

    pub fn flag(&self, variable: &'static str) -> Result<Option<bool>, ConfigError> {
        match self.get(variable).as_deref().map(str::trim) {
            None => Ok(None),
            Some("1" | "true" | "yes" | "on") => Ok(Some(true)),
            Some("0" | "false" | "no" | "off") => Ok(Some(false)),
            Some(other) => Err(ConfigError {
                variable,
                reason: format!("`{other}` is not a boolean (use 1 or 0)"),
            }),
        }
    }

    /// A whole number in `min..=max`.
    pub fn number(
        &self,
        variable: &'static str,
        min: usize,
        max: usize,
    ) -> Result<Option<usize>, ConfigError> {
        let Some(value) = self.get(variable) else {
            return Ok(None);
        };
        match value.trim().parse::<usize>() {
            Ok(n) if (min..=max).contains(&n) => Ok(Some(n)),
            _ => Err(ConfigError {
                variable,
                reason: format!("`{value}` is not a whole number between {min} and {max}"),
            }),
        }
    }

    /// Whole seconds in `min..=max`, or `default`.
    pub fn seconds(
        &self,
        variable: &'static str,
        min: usize,
        max: usize,
        default: Duration,
    ) -> Result<Duration, ConfigError> {
        Ok(self
            .number(variable, min, max)?
            .map_or(default, |s| Duration::from_secs(s as u64)))
    }
}
