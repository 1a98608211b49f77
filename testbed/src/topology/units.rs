//! The units of the topology file: durations (`us`, `ms`, `s`), percentages
//! (`%`) and rates (`kbit`, `mbit`, `gbit`) of link impairments, and sizes
//! (`Ki`, `Mi`, `Gi`, as Kubernetes writes them) of logs. Values are kept as
//! integers so that plans print the same bytes everywhere, and print in a
//! canonical form.

use std::fmt;
use std::str::FromStr;

/// A duration in whole microseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Duration(pub u64);

/// A percentage in millionths of one (1% = 10 000).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Percent(pub u32);

/// A rate in bits per second.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Rate(pub u64);

/// A size in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Size(pub u64);

/// Why a text is not a valid quantity; the text says how to write one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct UnitError(pub String);

/// Splits `12.5ms` into the number and the unit, and scales the number by
/// `scale` (the unit's size in the base unit) exactly, refusing fractions of
/// the base unit.
fn scaled(text: &str, units: &[(&str, u64)], what: &str, example: &str) -> Result<u64, UnitError> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let unit = unit.trim();
    let names: Vec<&str> = units.iter().map(|(u, _)| *u).collect();
    if t.starts_with('-') {
        return Err(UnitError(format!(
            "`{text}` is negative; a {what} is zero or more, e.g. {example}"
        )));
    }
    if num.is_empty() {
        return Err(UnitError(format!(
            "`{text}` is not a {what}: write a number followed by a unit ({}), e.g. {example}",
            names.join(", ")
        )));
    }
    let Some(&(_, scale)) = units.iter().find(|(u, _)| *u == unit) else {
        return Err(UnitError(if unit.is_empty() {
            format!(
                "`{text}` has no unit: write {num} followed by one of {}, e.g. {example}",
                names.join(", ")
            )
        } else {
            format!(
                "`{unit}` is not a unit of {what}; use one of {}, e.g. {example}",
                names.join(", ")
            )
        }));
    };
    let (whole, frac) = num.split_once('.').unwrap_or((num, ""));
    if whole.is_empty() && frac.is_empty() || frac.contains('.') {
        return Err(UnitError(format!(
            "`{num}` is not a number, e.g. {example}"
        )));
    }
    let digits = scale.to_string().len() as u32 - 1;
    let frac_trimmed = frac.trim_end_matches('0');
    if frac_trimmed.len() as u32 > digits || !scale.is_power_of_ten() {
        return Err(UnitError(format!(
            "`{text}` is more precise than a {what} can be; round it to {} decimal places",
            digits.min(frac.len() as u32)
        )));
    }
    let too_big = || UnitError(format!("`{text}` is too large"));
    let whole: u64 = if whole.is_empty() {
        0
    } else {
        whole.parse().map_err(|_| too_big())?
    };
    let mut f: u64 = if frac_trimmed.is_empty() {
        0
    } else {
        frac_trimmed.parse().map_err(|_| too_big())?
    };
    for _ in frac_trimmed.len() as u32..digits {
        f *= 10;
    }
    whole
        .checked_mul(scale)
        .and_then(|w| w.checked_add(f))
        .ok_or_else(too_big)
}

trait PowerOfTen {
    fn is_power_of_ten(&self) -> bool;
}

impl PowerOfTen for u64 {
    fn is_power_of_ten(&self) -> bool {
        let mut n = *self;
        while n >= 10 && n % 10 == 0 {
            n /= 10;
        }
        n == 1
    }
}

/// Prints `value` (in base units) with the largest unit that keeps it exact.
fn canonical(value: u64, units: &[(&str, u64)]) -> String {
    let mut best = units[0];
    for &(name, scale) in units {
        if value % scale == 0 && scale >= best.1 {
            best = (name, scale);
        }
    }
    if value == 0 {
        return format!("0{}", units[0].0);
    }
    format!("{}{}", value / best.1, best.0)
}

const DURATION_UNITS: &[(&str, u64)] = &[("us", 1), ("ms", 1_000), ("s", 1_000_000)];
const RATE_UNITS: &[(&str, u64)] = &[
    ("kbit", 1_000),
    ("mbit", 1_000_000),
    ("gbit", 1_000_000_000),
];

impl FromStr for Duration {
    type Err = UnitError;
    fn from_str(s: &str) -> Result<Self, UnitError> {
        scaled(s, DURATION_UNITS, "duration", "10ms").map(Duration)
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&canonical(self.0, DURATION_UNITS))
    }
}

impl FromStr for Rate {
    type Err = UnitError;
    fn from_str(s: &str) -> Result<Self, UnitError> {
        let r = scaled(s, RATE_UNITS, "rate", "100mbit").map(Rate)?;
        if r.0 == 0 {
            return Err(UnitError(format!("`{s}` is no rate at all: a rate limit must be above zero; remove `rate` for an unlimited link")));
        }
        Ok(r)
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 % 1_000 != 0 {
            return write!(f, "{}bit", self.0);
        }
        f.write_str(&canonical(self.0, RATE_UNITS))
    }
}

impl FromStr for Percent {
    type Err = UnitError;
    fn from_str(s: &str) -> Result<Self, UnitError> {
        // 1% = 10_000 millionths: four decimal places of a percent are exact.
        let v = scaled(s, &[("%", 10_000)], "percentage", "1%")?;
        if v > 1_000_000 {
            return Err(UnitError(format!(
                "`{s}` is more than 100%; a percentage is from 0% to 100%"
            )));
        }
        Ok(Percent(v as u32))
    }
}

impl fmt::Display for Percent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let whole = self.0 / 10_000;
        let frac = self.0 % 10_000;
        if frac == 0 {
            write!(f, "{whole}%")
        } else {
            let digits = format!("{frac:04}");
            write!(f, "{whole}.{}%", digits.trim_end_matches('0'))
        }
    }
}

/// The binary units of a size, largest first (a bare number is bytes).
const SIZE_UNITS: &[(&str, u64)] = &[
    ("Gi", 1 << 30),
    ("GiB", 1 << 30),
    ("Mi", 1 << 20),
    ("MiB", 1 << 20),
    ("Ki", 1 << 10),
    ("KiB", 1 << 10),
];

/// What to write instead of a unit that is not a size unit: a decimal unit
/// (`MB`) or a wrong case (`mi`) becomes its binary unit.
fn size_unit_hint(unit: &str) -> String {
    let lower = unit.to_ascii_lowercase();
    let binary = |c: char| match c {
        'k' => "Ki",
        'm' => "Mi",
        _ => "Gi",
    };
    let first = lower.chars().next().unwrap_or(' ');
    let rest = lower.get(1..).unwrap_or("");
    if "kmg".contains(first) && matches!(rest, "" | "b") {
        return format!(
            "`{unit}` is a decimal unit (powers of 1000): did you mean `{}` (1{0} = {} bytes)?",
            binary(first),
            SIZE_UNITS
                .iter()
                .find(|(u, _)| *u == binary(first))
                .map_or(0, |(_, v)| *v)
        );
    }
    if "kmg".contains(first) && matches!(rest, "i" | "ib") {
        let right = if rest == "i" {
            binary(first).to_string()
        } else {
            format!("{}B", binary(first))
        };
        return format!(
            "`{unit}` is not a unit of size: did you mean `{right}`? Units are case-sensitive"
        );
    }
    let names: Vec<&str> = SIZE_UNITS.iter().map(|(u, _)| *u).collect();
    match crate::diag::did_you_mean(unit, &names) {
        Some(s) => format!("`{unit}` is not a unit of size: did you mean `{s}`?"),
        None => format!(
            "`{unit}` is not a unit of size: use Ki, Mi or Gi (or KiB, MiB, GiB), or none for bytes"
        ),
    }
}

impl FromStr for Size {
    type Err = UnitError;
    fn from_str(s: &str) -> Result<Self, UnitError> {
        let t = s.trim();
        let units = "Ki, Mi or Gi (or KiB, MiB, GiB), or none for bytes, e.g. 10Mi";
        if t.starts_with('-') {
            return Err(UnitError(format!(
                "`{s}` is negative; a size is above zero, e.g. 10Mi"
            )));
        }
        let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let unit = unit.trim();
        if num.is_empty() {
            return Err(UnitError(format!(
                "`{s}` is not a size: write a whole number followed by {units}"
            )));
        }
        if unit.starts_with('.') {
            return Err(UnitError(format!(
                "`{s}` is not a whole number; write the size in a smaller unit, e.g. 1536Ki for 1.5Mi"
            )));
        }
        let scale = match SIZE_UNITS.iter().find(|(u, _)| *u == unit) {
            Some((_, scale)) => *scale,
            None if unit.is_empty() => 1,
            None => return Err(UnitError(size_unit_hint(unit))),
        };
        let too_big = || UnitError(format!("`{s}` is too large"));
        let bytes = num
            .parse::<u64>()
            .map_err(|_| too_big())?
            .checked_mul(scale)
            .ok_or_else(too_big)?;
        if bytes == 0 {
            return Err(UnitError(format!(
                "`{s}` is no size at all: a size must be above zero"
            )));
        }
        Ok(Size(bytes))
    }
}

impl fmt::Display for Size {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let unit = SIZE_UNITS
            .iter()
            .filter(|(u, _)| !u.ends_with('B'))
            .find(|(_, scale)| self.0 % scale == 0);
        match unit {
            Some((u, scale)) => write!(f, "{}{u}", self.0 / scale),
            None => write!(f, "{}", self.0),
        }
    }
}

serde_as_text!(Duration, Percent, Rate, Size);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!("10ms".parse::<Duration>().unwrap(), Duration(10_000));
        assert_eq!("1.5ms".parse::<Duration>().unwrap(), Duration(1_500));
        assert_eq!("2s".parse::<Duration>().unwrap().to_string(), "2s");
        assert_eq!("1500us".parse::<Duration>().unwrap().to_string(), "1500us");
        assert_eq!("0ms".parse::<Duration>().unwrap().to_string(), "0us");
        assert!("10".parse::<Duration>().unwrap_err().0.contains("no unit"));
        assert!("10 minutes"
            .parse::<Duration>()
            .unwrap_err()
            .0
            .contains("not a unit"));
        assert!("1.0005ms".parse::<Duration>().is_err());
        assert!("-1ms".parse::<Duration>().is_err());
        assert!("1..2ms".parse::<Duration>().is_err());
    }

    #[test]
    fn percents() {
        assert_eq!("1%".parse::<Percent>().unwrap(), Percent(10_000));
        assert_eq!("0.1%".parse::<Percent>().unwrap().to_string(), "0.1%");
        assert_eq!("100%".parse::<Percent>().unwrap().to_string(), "100%");
        assert!("150%".parse::<Percent>().is_err());
        assert!("5".parse::<Percent>().is_err());
    }

    #[test]
    fn rates() {
        assert_eq!("100mbit".parse::<Rate>().unwrap(), Rate(100_000_000));
        assert_eq!("1.5gbit".parse::<Rate>().unwrap().to_string(), "1500mbit");
        assert_eq!("512kbit".parse::<Rate>().unwrap().to_string(), "512kbit");
        assert!("fast".parse::<Rate>().is_err());
        assert!("0mbit".parse::<Rate>().is_err());
    }

    #[test]
    fn sizes() {
        let ok = |s: &str| s.parse::<Size>().unwrap();
        let err = |s: &str| s.parse::<Size>().unwrap_err().0;
        assert_eq!(ok("10Mi"), Size(10 << 20));
        assert_eq!(ok("10MiB"), Size(10 << 20));
        assert_eq!(ok("4Ki"), Size(4096));
        assert_eq!(ok("4KiB"), Size(4096));
        assert_eq!(ok("2Gi"), Size(2 << 30));
        assert_eq!(ok("2GiB"), Size(2 << 30));
        assert_eq!(ok("4096"), Size(4096));
        assert_eq!(ok("10 Mi"), Size(10 << 20));
        assert_eq!(ok("10MiB").to_string(), "10Mi");
        assert_eq!(ok("1024Ki").to_string(), "1Mi");
        assert_eq!(ok("5000").to_string(), "5000");
        assert_eq!(ok("3072Mi").to_string(), "3Gi");
        // Zero, negative, overflow, fractions, no number.
        assert!(err("0Mi").contains("above zero"), "{}", err("0Mi"));
        assert!(err("0").contains("above zero"));
        assert!(err("-1Mi").contains("negative"));
        assert!(err("18446744073709551615Ki").contains("too large"));
        assert!(err("99999999999999999999999").contains("too large"));
        assert_eq!(ok("18446744073709551615"), Size(u64::MAX));
        assert!(err("1.5Mi").contains("1536Ki"), "{}", err("1.5Mi"));
        assert!(err("Mi").contains("not a size"));
        assert!(err("").contains("not a size"));
        // Decimal units and wrong cases get their binary unit.
        assert!(err("10MB").contains("did you mean `Mi`"), "{}", err("10MB"));
        assert!(err("10M").contains("decimal"), "{}", err("10M"));
        assert!(err("10k").contains("`Ki`"), "{}", err("10k"));
        assert!(err("1GB").contains("`Gi`"), "{}", err("1GB"));
        assert!(err("10mi").contains("did you mean `Mi`"), "{}", err("10mi"));
        assert!(
            err("10mib").contains("did you mean `MiB`"),
            "{}",
            err("10mib")
        );
        assert!(err("10Mo").contains("did you mean `Mi`"), "{}", err("10Mo"));
        assert!(err("10 bytes").contains("not a unit of size"));
        for s in ["1Ki", "7Mi", "12345", "3Gi"] {
            assert_eq!(ok(&ok(s).to_string()), ok(s));
        }
    }
}
