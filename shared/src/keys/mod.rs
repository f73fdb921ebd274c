//! Key material for BYOK envelope encryption. Today: the local master key file used when
//! no KMS key is configured (development only).

pub mod master_key;
