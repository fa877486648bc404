//! Sizes given on the command line (`--memory-budget 256MiB`).

/// The default `--memory-budget`.
pub const MEMORY_BUDGET_DEFAULT: &str = "256MiB";
/// The smallest `--memory-budget` accepted: below it the runs spilled would be so small
/// that merging them costs more than it saves.
pub const MEMORY_BUDGET_BYTES_MIN: u64 = 64 << 10;

/// Parses a size: a whole number and an optional binary unit (`K`/`KiB`, `M`/`MiB`,
/// `G`/`GiB`, `T`/`TiB`, the one-letter ones in either case; none or `B` for bytes), at least [`MEMORY_BUDGET_BYTES_MIN`].
///
/// # Errors
/// A message saying what is wrong, for clap to print (exit 2).
///
/// # Examples
/// ```
/// use tmpa_compact::parse_memory_budget;
/// assert_eq!(parse_memory_budget("256MiB").unwrap(), 256 << 20);
/// assert_eq!(parse_memory_budget("1G").unwrap(), 1 << 30);
/// assert_eq!(parse_memory_budget("64m").unwrap(), 64 << 20);
/// assert_eq!(parse_memory_budget("65536").unwrap(), 65536);
/// assert!(parse_memory_budget("12").is_err()); // below the minimum
/// assert!(parse_memory_budget("1.5G").is_err());
/// assert!(parse_memory_budget("2MB").is_err()); // decimal units are not guessed at
/// ```
pub fn parse_memory_budget(s: &str) -> Result<u64, String> {
    let (n, unit) =
        tmpa_maint::number_and_unit(s, "a whole number and a binary unit (K, M, G), e.g. 256MiB")?;
    let shift = match unit {
        "" | "B" => 0,
        "K" | "k" | "KiB" => 10,
        "M" | "m" | "MiB" => 20,
        "G" | "g" | "GiB" => 30,
        "T" | "t" | "TiB" => 40,
        _ => {
            return Err(format!(
                "{s:?}: unknown unit {unit:?}; use K, M, G or T (KiB, MiB, GiB, TiB: powers of 1024)"
            ));
        }
    };
    let bytes = n
        .checked_mul(1 << shift)
        .ok_or_else(|| format!("{s:?}: too large"))?;
    if bytes < MEMORY_BUDGET_BYTES_MIN {
        return Err(format!(
            "{s:?}: below the minimum of {}KiB",
            MEMORY_BUDGET_BYTES_MIN >> 10
        ));
    }
    Ok(bytes)
}
