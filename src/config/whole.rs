//! Whole-number options and their allowed ranges: a value outside the range,
//! or too large for any number, is refused with the option and the range,
//! never wrapped or turned into a panic later.

use std::ffi::OsStr;
use std::marker::PhantomData;

use clap::builder::TypedValueParser;
use clap::error::ErrorKind;

/// The largest value, in seconds, of an option that is a duration: one
/// year. Deadlines are computed by adding these to the clock, which must
/// not overflow.
pub const MAX_SECONDS: u64 = 365 * 24 * 3600;

/// Parses a whole number between `minimum` and `maximum` into `T`.
#[derive(Debug)]
pub struct Whole<T> {
    minimum: u64,
    maximum: u64,
    /// What the number counts (`seconds`), or empty.
    unit: &'static str,
    /// What the edges mean (`0 turns it off`), or empty.
    note: &'static str,
    output: PhantomData<fn() -> T>,
}

impl<T> Clone for Whole<T> {
    fn clone(&self) -> Self {
        Self { ..*self }
    }
}

impl<T> Whole<T> {
    pub const fn new(minimum: u64, maximum: u64, unit: &'static str) -> Self {
        Self {
            minimum,
            maximum,
            unit,
            note: "",
            output: PhantomData,
        }
    }

    /// A duration in seconds, at most [`MAX_SECONDS`].
    pub const fn seconds(minimum: u64) -> Self {
        Self::new(minimum, MAX_SECONDS, "seconds")
    }

    /// The same range with what its edges mean.
    pub const fn note(self, note: &'static str) -> Self {
        Self { note, ..self }
    }

    /// `between 1 and 4096 seconds (0 turns it off)`.
    pub fn rule(&self) -> String {
        let mut rule = format!("between {} and {}", self.minimum, self.maximum);
        if !self.unit.is_empty() {
            rule.push(' ');
            rule.push_str(self.unit);
        }
        if !self.note.is_empty() {
            rule.push_str(&format!(" ({})", self.note));
        }
        rule
    }

    /// The number, if `text` is one within the range.
    fn parse(&self, text: &str) -> Option<u64> {
        let number: u64 = text.trim().parse().ok()?;
        (self.minimum..=self.maximum)
            .contains(&number)
            .then_some(number)
    }
}

impl<T> TypedValueParser for Whole<T>
where
    T: TryFrom<u64> + Clone + Send + Sync + 'static,
{
    type Value = T;

    fn parse_ref(
        &self,
        command: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &OsStr,
    ) -> Result<T, clap::Error> {
        let text = value.to_string_lossy();
        let number = self
            .parse(&text)
            .and_then(|number| T::try_from(number).ok());
        number.ok_or_else(|| {
            let option = arg
                .and_then(clap::Arg::get_long)
                .map_or_else(|| "the option".to_owned(), |long| format!("--{long}"));
            let message = format!(
                "{option} must be a whole number {}, got {text:?}\n",
                self.rule()
            );
            clap::Error::raw(ErrorKind::ValueValidation, message).with_cmd(command)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_outside_the_range_or_any_number_are_refused() {
        let processes = Whole::<u32>::new(1, 4096, "");
        assert_eq!(processes.parse("4096"), Some(4096));
        for text in [
            "0",
            "4097",
            "99999999999",
            "1e20",
            "-1",
            "",
            "99999999999999999999999",
        ] {
            assert_eq!(processes.parse(text), None, "{text}");
        }
        assert_eq!(
            Whole::<u64>::seconds(0).note("0 turns it off").rule(),
            "between 0 and 31536000 seconds (0 turns it off)"
        );
    }
}
