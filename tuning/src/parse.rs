//! Small parsers for kernel text formats: CPU lists, cache sizes,
//! `/proc/self/limits`, `/proc/meminfo`, the kernel command line, sysfs
//! bracketed selections.

use crate::fs::MemlockLimit;

/// Parse a kernel CPU list (`"0-3,8,10-11"`). Empty text and `(null)` are
/// the empty list. Returns `None` on malformed input.
pub fn cpulist(text: &str) -> Option<Vec<usize>> {
    let text = text.trim();
    let mut out = Vec::new();
    if text.is_empty() || text == "(null)" {
        return Some(out);
    }
    for part in text.split(',') {
        let part = part.trim();
        if part.is_empty() {
            continue;
        }
        // A `:used/group` stride suffix (rare) is not supported.
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (usize, usize) = (a.parse().ok()?, b.parse().ok()?);
                if b < a {
                    return None;
                }
                out.extend(a..=b);
            }
            None => out.push(part.parse().ok()?),
        }
    }
    out.sort_unstable();
    out.dedup();
    Some(out)
}

/// Format CPUs as a kernel CPU list with ranges (`[0,1,2,5]` → `"0-2,5"`).
pub fn format_cpulist(cpus: &[usize]) -> String {
    let mut v = cpus.to_vec();
    v.sort_unstable();
    v.dedup();
    let mut parts = Vec::new();
    let mut i = 0;
    while i < v.len() {
        let start = v[i];
        let mut end = start;
        while i + 1 < v.len() && v[i + 1] == end + 1 {
            i += 1;
            end = v[i];
        }
        parts.push(if start == end {
            start.to_string()
        } else {
            format!("{start}-{end}")
        });
        i += 1;
    }
    parts.join(",")
}

/// Parse a sysfs size (`"32K"`, `"1024K"`, `"32M"`, `"512"`) into bytes.
pub fn size_bytes(text: &str) -> Option<u64> {
    let t = text.trim();
    let (num, mult) = match t.chars().last()? {
        'K' | 'k' => (&t[..t.len() - 1], 1u64 << 10),
        'M' | 'm' => (&t[..t.len() - 1], 1 << 20),
        'G' | 'g' => (&t[..t.len() - 1], 1 << 30),
        _ => (t, 1),
    };
    num.trim().parse::<u64>().ok().map(|n| n * mult)
}

/// Human form of a byte count (`8388608` → `"8 MiB"`).
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [(&str, u64); 3] = [("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)];
    for (name, size) in UNITS {
        if bytes >= size && bytes % size == 0 {
            return format!("{} {name}", bytes / size);
        }
    }
    format!("{bytes} B")
}

fn limit_value(text: &str) -> Option<Option<u64>> {
    if text == "unlimited" {
        Some(None)
    } else {
        text.parse().ok().map(Some)
    }
}

const MEMLOCK_LINE: &str = "Max locked memory";

/// The `Max locked memory` line of `/proc/self/limits`.
pub fn memlock_from_limits(text: &str) -> Option<MemlockLimit> {
    let line = text.lines().find(|l| l.starts_with(MEMLOCK_LINE))?;
    let mut fields = line[MEMLOCK_LINE.len()..].split_whitespace();
    Some(MemlockLimit {
        soft_bytes: limit_value(fields.next()?)?,
        hard_bytes: limit_value(fields.next()?)?,
    })
}

/// `/proc/self/limits` text with the `Max locked memory` line replaced.
pub fn limits_with_memlock(text: &str, limit: MemlockLimit) -> String {
    let show = |v: Option<u64>| v.map_or("unlimited".to_string(), |b| b.to_string());
    let mut out = String::new();
    for line in text.lines() {
        if line.starts_with(MEMLOCK_LINE) {
            out.push_str(&format!(
                "{:<26}{:<21}{:<21}{:<10}",
                MEMLOCK_LINE,
                show(limit.soft_bytes),
                show(limit.hard_bytes),
                "bytes"
            ));
        } else {
            out.push_str(line);
        }
        out.push('\n');
    }
    out
}

/// A numeric field of `/proc/meminfo` (`HugePages_Total`), unit dropped.
pub fn meminfo_field(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        if k.trim() == key {
            v.split_whitespace().next()?.parse().ok()
        } else {
            None
        }
    })
}

/// Value of `key=` on the kernel command line (`isolcpus=…`), last wins.
/// Parameters after a bare `--` belong to init and are ignored.
pub fn cmdline_param<'a>(cmdline: &'a str, key: &str) -> Option<&'a str> {
    let mut found = None;
    for word in cmdline.split_whitespace() {
        if word == "--" {
            break;
        }
        if let Some((k, v)) = word.split_once('=') {
            if k == key {
                found = Some(v);
            }
        }
    }
    found
}

/// CPUs named by `isolcpus=` (flags such as `managed_irq,domain,` are
/// skipped) or `nohz_full=`.
pub fn cmdline_cpus(cmdline: &str, key: &str) -> Vec<usize> {
    let Some(value) = cmdline_param(cmdline, key) else {
        return Vec::new();
    };
    let list: Vec<&str> = value
        .split(',')
        .filter(|p| p.starts_with(|c: char| c.is_ascii_digit()))
        .collect();
    cpulist(&list.join(",")).unwrap_or_default()
}

/// The selected word of a sysfs choice (`"always [madvise] never"` →
/// `madvise`). Text without brackets is taken whole (a fixture after an
/// `apply` write).
pub fn bracketed(text: &str) -> Option<String> {
    let t = text.trim();
    if let (Some(a), Some(b)) = (t.find('['), t.find(']')) {
        if a < b {
            return Some(t[a + 1..b].to_string());
        }
    }
    if t.is_empty() || t.contains(char::is_whitespace) {
        None
    } else {
        Some(t.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpulists_round_trip() {
        assert_eq!(cpulist("0-3,8,10-11\n"), Some(vec![0, 1, 2, 3, 8, 10, 11]));
        assert_eq!(cpulist("\n"), Some(vec![]));
        assert_eq!(cpulist("(null)\n"), Some(vec![]));
        assert_eq!(cpulist("3-1"), None);
        assert_eq!(cpulist("a"), None);
        assert_eq!(format_cpulist(&[5, 0, 1, 2, 7, 8]), "0-2,5,7-8");
        assert_eq!(format_cpulist(&[]), "");
    }

    #[test]
    fn sizes_and_limits() {
        assert_eq!(size_bytes("32K\n"), Some(32 * 1024));
        assert_eq!(size_bytes("32768K"), Some(32 << 20));
        assert_eq!(human_bytes(8 << 20), "8 MiB");
        assert_eq!(human_bytes(1000), "1000 B");
        let limits = "Limit  Soft Limit Hard Limit Units\n\
                      Max locked memory         8388608              unlimited            bytes\n";
        let m = memlock_from_limits(limits).unwrap();
        assert_eq!(m.soft_bytes, Some(8 << 20));
        assert_eq!(m.hard_bytes, None);
        let new = MemlockLimit {
            soft_bytes: Some(64 << 20),
            hard_bytes: None,
        };
        assert_eq!(
            memlock_from_limits(&limits_with_memlock(limits, new)),
            Some(new)
        );
    }

    #[test]
    fn cmdline_and_bracketed() {
        let c = "quiet isolcpus=managed_irq,domain,2-5,8 nohz_full=2-5 -- isolcpus=9";
        assert_eq!(cmdline_cpus(c, "isolcpus"), vec![2, 3, 4, 5, 8]);
        assert_eq!(cmdline_cpus(c, "nohz_full"), vec![2, 3, 4, 5]);
        assert_eq!(cmdline_cpus(c, "rcu_nocbs"), Vec::<usize>::new());
        assert_eq!(
            bracketed("always [madvise] never\n").as_deref(),
            Some("madvise")
        );
        assert_eq!(bracketed("madvise\n").as_deref(), Some("madvise"));
        assert_eq!(
            meminfo_field("HugePages_Total:      16\n", "HugePages_Total"),
            Some(16)
        );
    }
}
