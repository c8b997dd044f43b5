//! An `i128` written as PostgreSQL `numeric`, for exact money sums wider than `bigint`.
//!
//! Written here because the maintained decimal crates stop at 96 bits (rust_decimal) or bring a
//! big-integer stack for one column; the wire format is a few base-10000 digits.

use bytes::{BufMut, BytesMut};
use tokio_postgres::types::{to_sql_checked, IsNull, ToSql, Type};

/// An integer bound as `numeric` (scale 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Numeric(pub i128);

/// `numeric`'s sign word for negative values.
const NEGATIVE: u16 = 0x4000;

impl ToSql for Numeric {
    fn to_sql(
        &self,
        _: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        let mut rest = self.0.unsigned_abs();
        // Base-10000 digits, least significant first; trailing zero digits are implied by the
        // weight, as PostgreSQL itself stores them.
        let mut digits = Vec::with_capacity(10);
        while rest > 0 {
            digits.push((rest % 10_000) as i16);
            rest /= 10_000;
        }
        let weight = digits.len() as i16 - 1;
        let zeros = digits.iter().take_while(|d| **d == 0).count();
        let significant = &digits[zeros..];
        out.put_i16(significant.len() as i16);
        out.put_i16(weight.max(0));
        out.put_u16(if self.0 < 0 { NEGATIVE } else { 0 });
        out.put_i16(0);
        for digit in significant.iter().rev() {
            out.put_i16(*digit);
        }
        Ok(IsNull::No)
    }

    fn accepts(ty: &Type) -> bool {
        *ty == Type::NUMERIC
    }

    to_sql_checked!();
}
