//! Client key generation and host-key fingerprints.

use fargate_core::{Error, ErrorKind, HostKey, KeyPair, KeyType, PrivateKey, Result};
use ssh_key::LineEnding;
use ssh_key::private::{Ed25519Keypair, KeypairData, RsaKeypair};
use ssh_key::rand_core::OsRng;

use crate::BACKEND;

/// Comment put on generated public keys (visible in the task's `authorized_keys`).
pub const KEY_COMMENT: &str = "fargate-job";

/// Smallest RSA modulus accepted, in bits.
pub const MIN_RSA_BITS: u32 = 3072;

/// Largest RSA modulus accepted, in bits (generation time grows with the cube of the size).
pub const MAX_RSA_BITS: u32 = 8192;

/// Makes a fresh key pair. CPU-bound (seconds for RSA): call it from a blocking thread.
pub(crate) fn generate(key_type: KeyType) -> Result<KeyPair> {
    let data = match key_type {
        KeyType::Ed25519 => KeypairData::from(Ed25519Keypair::random(&mut OsRng)),
        KeyType::Rsa { bits } => {
            if !(MIN_RSA_BITS..=MAX_RSA_BITS).contains(&bits) {
                return Err(Error::new(
                    ErrorKind::InvalidConfig,
                    format!(
                        "an RSA key of {bits} bits was asked for; the SSH key must have between \
                         {MIN_RSA_BITS} and {MAX_RSA_BITS} bits"
                    ),
                )
                .with_backend(BACKEND)
                .with_hint(
                    "use the default ed25519 key type, or RSA with 3072 or 4096 bits \
                     (OpenSSH refuses short RSA keys)",
                ));
            }
            let keypair = RsaKeypair::random(&mut OsRng, bits as usize)
                .map_err(|e| key_error(format!("generating an RSA-{bits} key failed: {e}")))?;
            KeypairData::from(keypair)
        }
        other => {
            return Err(Error::new(
                ErrorKind::Unsupported,
                format!("the SSH backend cannot generate {other} keys"),
            )
            .with_backend(BACKEND));
        }
    };
    let key = ssh_key::PrivateKey::new(data, KEY_COMMENT)
        .map_err(|e| key_error(format!("building the SSH key failed: {e}")))?;
    let public_key = key
        .public_key()
        .to_openssh()
        .map_err(|e| key_error(format!("encoding the SSH public key failed: {e}")))?;
    // `to_openssh` returns a `Zeroizing<String>`: the copy below is owned by `PrivateKey`,
    // which zeroizes it in turn; `key` itself zeroizes its secret on drop.
    let encoded = key
        .to_openssh(LineEnding::LF)
        .map_err(|e| key_error(format!("encoding the SSH private key failed: {e}")))?;
    Ok(KeyPair {
        public_key: public_key.trim_end().to_owned(),
        private_key: PrivateKey::new(String::from(encoded.as_str())),
    })
}

fn key_error(message: String) -> Error {
    Error::new(ErrorKind::Unexpected, message).with_backend(BACKEND)
}

/// A short description of a private key's type for error messages, e.g. `ssh-ed25519`.
///
/// Never includes key material.
pub(crate) fn describe_private_key(key: &PrivateKey) -> String {
    let text = key.expose();
    if let Ok(parsed) = ssh_key::PrivateKey::from_openssh(text) {
        return parsed.algorithm().as_str().to_owned();
    }
    let first = text.lines().next().unwrap_or_default().trim();
    match first {
        "-----BEGIN RSA PRIVATE KEY-----" => "ssh-rsa (PEM)".to_owned(),
        "-----BEGIN EC PRIVATE KEY-----" => "ecdsa (PEM)".to_owned(),
        "-----BEGIN PRIVATE KEY-----" => "PKCS#8 (PEM)".to_owned(),
        _ => "unrecognised key format".to_owned(),
    }
}

/// The [`HostKey`] of an SSH public key blob (the wire encoding, as in `known_hosts`).
///
/// The algorithm is the blob's first string; the fingerprint is OpenSSH's
/// `SHA256:<unpadded base64>` of the whole blob.
pub fn host_key_from_blob(blob: &[u8]) -> HostKey {
    HostKey::from_blob(blob)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn ed25519_pair_is_one_line_and_openssh_encoded() {
        let pair = generate(KeyType::Ed25519).unwrap();
        assert!(pair.public_key.starts_with("ssh-ed25519 AAAA"));
        assert!(pair.public_key.ends_with(" fargate-job"));
        assert!(!pair.public_key.contains('\n'));
        assert!(
            pair.private_key
                .expose()
                .starts_with("-----BEGIN OPENSSH PRIVATE KEY-----\n")
        );
        assert_eq!(describe_private_key(&pair.private_key), "ssh-ed25519");
        let other = generate(KeyType::Ed25519).unwrap();
        assert_ne!(pair.public_key, other.public_key);
    }

    #[test]
    fn fingerprint_agrees_with_ssh_key() {
        let pair = generate(KeyType::Ed25519).unwrap();
        let public = ssh_key::PublicKey::from_openssh(&pair.public_key).unwrap();
        let blob = public.to_bytes().unwrap();
        let host_key = host_key_from_blob(&blob);
        assert_eq!(host_key.algorithm, "ssh-ed25519");
        assert_eq!(
            host_key.fingerprint,
            public.fingerprint(ssh_key::HashAlg::Sha256).to_string()
        );
    }

    #[test]
    fn short_rsa_keys_are_refused() {
        let err = generate(KeyType::Rsa { bits: 2048 }).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidConfig);
        assert!(err.message().contains("2048"), "{err}");
    }

    #[test]
    fn garbage_blob_has_unknown_algorithm() {
        let key = host_key_from_blob(&[0xff, 0xff, 0xff, 0xff, 1]);
        assert_eq!(key.algorithm, "unknown");
        assert!(key.fingerprint.starts_with("SHA256:"));
        assert_eq!(key.fingerprint.len(), 7 + 43);
    }
}
