//! What a source can observe ([`SourceCaps`]).

use serde::{Deserialize, Deserializer, Serialize, Serializer};

bitflags::bitflags! {
    /// Capabilities a source advertises; the collector's capabilities are their union.
    ///
    /// In JSON they render as a list of flag names: `["PROCESS", "REALTIME"]`.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
    pub struct SourceCaps: u32 {
        /// Emits process events (exec, fork, exit, snapshot).
        const PROCESS = 1 << 0;
        /// Emits network events (connect, accept, close, listen).
        const NETWORK = 1 << 1;
        /// Emits filesystem events (create, open, unlink, rename).
        const FILESYSTEM = 1 << 2;
        /// Emits performance metrics.
        const PERFORMANCE = 1 << 3;
        /// Events arrive as they happen, not by polling.
        const REALTIME = 1 << 4;
        /// Events are captured in the kernel (eBPF), so short-lived activity is not missed.
        const KERNEL_LEVEL = 1 << 5;
        /// Observes every process on the host, not one container or user.
        const SYSTEM_WIDE = 1 << 6;
    }
}

impl SourceCaps {
    /// Names of the set flags, in declaration order.
    pub fn names(&self) -> Vec<&'static str> {
        self.iter_names().map(|(name, _)| name).collect()
    }

    /// Parses one flag name (case-insensitive), e.g. from a `--domain` argument.
    pub fn parse_name(name: &str) -> Option<Self> {
        Self::all()
            .iter_names()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, f)| f)
    }
}

impl Serialize for SourceCaps {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.iter_names().map(|(name, _)| name))
    }
}

impl<'de> Deserialize<'de> for SourceCaps {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let names = Vec::<String>::deserialize(deserializer)?;
        names.iter().try_fold(SourceCaps::empty(), |acc, name| {
            SourceCaps::parse_name(name)
                .map(|f| acc | f)
                .ok_or_else(|| serde::de::Error::custom(format!("unknown capability `{name}`")))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_as_list_of_names() {
        let caps = SourceCaps::PROCESS | SourceCaps::KERNEL_LEVEL;
        assert_eq!(
            serde_json::to_string(&caps).unwrap(),
            r#"["PROCESS","KERNEL_LEVEL"]"#
        );
        let back: SourceCaps = serde_json::from_str(r#"["kernel_level","PROCESS"]"#).unwrap();
        assert_eq!(back, caps);
        assert!(serde_json::from_str::<SourceCaps>(r#"["NOPE"]"#).is_err());
    }
}
