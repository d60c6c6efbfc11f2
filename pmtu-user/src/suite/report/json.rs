//! One JSON object per scenario (`"type":"scenario"`), then the summary (`"type":"summary"`).
use std::io::{self, Write};

use super::{Outcome, Summary};

pub fn outcome(out: &mut impl Write, o: &Outcome) -> io::Result<()> {
    serde_json::to_writer(&mut *out, o)?;
    writeln!(out)
}

pub fn summary(out: &mut impl Write, s: &Summary) -> io::Result<()> {
    serde_json::to_writer(&mut *out, s)?;
    writeln!(out)
}
