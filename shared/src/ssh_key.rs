//! SSH public keys as users paste them into `POST /ssh-keys`.
//!
//! [`SshPublicKey::parse`] is the only way to get an [`SshPublicKey`], so holding one means the
//! line has been checked all the way down to the key material: what we store and forward to
//! the GPU provider is a key `sshd` on the instance can use, and a mistake is
//! caught here with a message that says how to fix it, instead of as a provider error or an
//! instance nobody can log in to.
//!
//! # What is accepted
//!
//! One OpenSSH public key line, `<type> <base64 key data>[ <comment>]`, exactly what
//! `cat ~/.ssh/id_ed25519.pub` prints, with the type one of:
//!
//! - `ssh-ed25519`;
//! - `ssh-rsa` with a modulus of 2048 to 16384 bits (below 2048 is breakable in practice;
//!   above 16384 OpenSSH itself refuses the key);
//! - `ecdsa-sha2-nistp256`, `ecdsa-sha2-nistp384`, `ecdsa-sha2-nistp521`.
//!
//! The base64 key data (RFC 4253 §6.6, RFC 5656 §3.1, RFC 8709 §4) is decoded by RustCrypto's
//! `ssh-key` crate, which also computes the fingerprint; an ECDSA point is checked by the
//! `p256`/`p384`/`p521` crates. What this module adds is policy and messages: the type named
//! inside must match the one in front (a line edited by hand, or two keys spliced together,
//! otherwise slips through); there must be nothing left over, and the key must re-encode to
//! exactly the pasted bytes (so no redundant zero bytes in front of a number, no length field
//! at odds with what follows); an RSA modulus is odd, its exponent sane and its size 2048 to
//! 16384 bits; an ECDSA point is uncompressed, of the named
//! curve *and on it*. A single flipped byte in an ECDSA key is therefore always refused. An
//! ed25519 key is any 32 bytes to OpenSSH, which does not decompress the point when it loads a
//! key; we do the same (no `ed25519-dalek` check), so a flipped byte inside its key material
//! cannot be detected, and the same holds for most bytes of an RSA modulus; those yield a
//! different key, hence a different fingerprint.
//!
//! Surrounding whitespace (and so a trailing newline) is trimmed, as is a leading byte-order
//! mark that Windows editors add; whitespace between the fields is normalised to one space in
//! [`SshPublicKey::canonical`], which is what gets stored and sent to the provider.
//!
//! # What is refused, and why it has its own message
//!
//! Every refusal is an [`SshKeyError`], which becomes a 400 naming the `public_key` field. The
//! common mistakes each get a variant whose message says what to do instead:
//!
//! - a **private key** (PEM `-----BEGIN ... PRIVATE KEY-----` of any kind, OpenSSH's own
//!   format even without its armour lines, PuTTY `.ppk`): the mistake the user guide warns
//!   about (§12) and the one that matters, so the message says plainly that it must never be
//!   shared;
//! - several lines (two keys pasted at once, or one key wrapped by an editor);
//! - `authorized_keys` options or a `known_hosts` host name in front of the key;
//! - the SSH2 (RFC 4716) and PEM public key formats, with the `ssh-keygen -i` line that converts
//!   them;
//! - `ssh-dss` (DSA: 1024-bit, disabled by default since OpenSSH 7.0), RSA below 2048 bits
//!   (naming the size found), unknown types (listing the supported ones).
//!
//! No error ever carries or echoes the pasted text: it may be a private key, and error messages
//! end up in responses, logs and support tickets. Callers must not log the raw input either.
//! (`ssh-key`'s own errors are therefore only classified, never shown.)

use std::fmt;
use std::str::FromStr;

use base64::alphabet;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;
use ssh_encoding::{Decode, Encode, Reader};
use ssh_key::public::{EcdsaPublicKey, KeyData, RsaPublicKey};
use ssh_key::{HashAlg, Mpint};

use crate::error::ApiError;

/// The request field every error names.
pub const FIELD: &str = "public_key";

/// Longest accepted input, in bytes after trimming. A 16384-bit RSA key, the largest OpenSSH
/// handles, is under 3 KiB; anything near this is not a public key.
pub const MAX_LEN: usize = 16 * 1024;

/// Smallest accepted RSA modulus, in bits.
pub const MIN_RSA_BITS: u32 = 2048;

/// Largest accepted RSA modulus, in bits: OpenSSH's own limit (`SSH_RSA_MAXIMUM_MODULUS_SIZE`),
/// so a larger key would not work on the instance anyway.
pub const MAX_RSA_BITS: u32 = 16384;

/// Key types accepted, in the order error messages list them.
pub const SUPPORTED_ALGORITHMS: [&str; 5] = [
    "ssh-ed25519",
    "ssh-rsa",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
];

/// Base64 of `openssh-key-v1\0`, the magic that starts every OpenSSH private key body: catches
/// a private key pasted without its `-----BEGIN` / `-----END` lines.
const OPENSSH_PRIVATE_MAGIC_B64: &str = "b3BlbnNzaC1rZXktdjE";

/// The key data may come with or without `=` padding (some tools strip it); what we store is
/// re-encoded with padding, like OpenSSH writes it. Non-zero trailing bits are still refused,
/// so each blob has exactly one accepted spelling per padding style.
const LENIENT_BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// A validated OpenSSH public key line. Cannot hold an invalid value: the only constructor is
/// [`SshPublicKey::parse`] (also reachable as [`str::parse`]).
///
/// Equality compares the comment too; to spot the same key registered twice compare
/// [`SshPublicKey::fingerprint`]s.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct SshPublicKey {
    /// One of [`SUPPORTED_ALGORITHMS`].
    algorithm: &'static str,
    /// The key data as `ssh-key` decoded it. It re-encodes to exactly the pasted bytes (checked
    /// in [`decode_key_data`]), so the fingerprint computed from it is the one `ssh-keygen`
    /// prints for the pasted line.
    key: KeyData,
    /// `<algorithm> <padded base64 of the pasted key data>[ <comment>]`.
    canonical: String,
    /// Whitespace runs collapsed to one space; never empty.
    comment: Option<String>,
    bits: u32,
}

impl SshPublicKey {
    /// Parses and fully validates one pasted public key; see the module docs for the rules.
    pub fn parse(input: &str) -> Result<SshPublicKey, SshKeyError> {
        // Notepad and some clipboards prepend a byte-order mark, which `trim` keeps.
        let text = input.strip_prefix('\u{feff}').unwrap_or(input).trim();
        if text.is_empty() {
            return Err(SshKeyError::Empty);
        }
        // Before the length check and anything else: whatever else is wrong with the paste,
        // the first thing the user needs to hear is that it holds a private key.
        if looks_like_private_key(text) {
            return Err(SshKeyError::PrivateKey);
        }
        if text.len() > MAX_LEN {
            return Err(SshKeyError::TooLong { bytes: text.len() });
        }
        // Both formats span several lines, so they are recognised before the line count, whose
        // message would not help.
        let lines: Vec<&str> = text
            .split(is_line_break)
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect();
        if lines.iter().any(|l| is_ssh2_armour(l)) {
            return Err(SshKeyError::Ssh2Format);
        }
        if lines.iter().any(|l| is_pem_public_armour(l)) {
            return Err(SshKeyError::PemPublicKey);
        }
        if lines.len() > 1 {
            return Err(SshKeyError::MultipleLines { lines: lines.len() });
        }
        // Tabs are fine (they separate fields like spaces); escape sequences and NULs are not
        // something to store and show in a dashboard.
        if text.chars().any(|c| c.is_control() && !c.is_whitespace()) {
            return Err(SshKeyError::ControlCharacters);
        }
        Self::parse_line(text)
    }

    /// `<type> <base64>[ <comment>]`, already known to be one trimmed line.
    fn parse_line(line: &str) -> Result<SshPublicKey, SshKeyError> {
        let mut tokens = line.split_whitespace();
        let first = tokens.next().ok_or(SshKeyError::Empty)?;
        let Some(algorithm) = supported_algorithm(first) else {
            return Err(if first == "ssh-dss" {
                SshKeyError::Dsa
            } else if has_prefix_before_key_type(first, line) {
                SshKeyError::OptionsBeforeKey
            } else {
                SshKeyError::UnsupportedType
            });
        };
        let data = tokens.next().ok_or(SshKeyError::MissingKeyData)?;
        let comment = tokens.collect::<Vec<_>>().join(" ");
        let blob = LENIENT_BASE64
            .decode(data)
            .map_err(|_| SshKeyError::InvalidBase64)?;
        let (key, bits) = decode_key_data(algorithm, &blob)?;
        let mut canonical = format!("{algorithm} {}", STANDARD.encode(&blob));
        if !comment.is_empty() {
            canonical.push(' ');
            canonical.push_str(&comment);
        }
        Ok(SshPublicKey {
            algorithm,
            key,
            canonical,
            comment: (!comment.is_empty()).then_some(comment),
            bits,
        })
    }

    /// The key type: `"ssh-ed25519"`, `"ssh-rsa"`, `"ecdsa-sha2-nistp256"`, ...
    pub fn algorithm(&self) -> &str {
        self.algorithm
    }

    /// Key size as `ssh-keygen -l` reports it: 256 for ed25519, the modulus size for RSA, the
    /// curve size (256, 384, 521) for ECDSA.
    pub fn bits(&self) -> u32 {
        self.bits
    }

    /// The free-text label after the key data (often `user@host`), if any.
    pub fn comment(&self) -> Option<&str> {
        self.comment.as_deref()
    }

    /// `SHA256:<unpadded base64 of sha256(key data)>`, character for character what
    /// `ssh-keygen -lf key.pub` prints, so users can match a stored key to a file.
    pub fn fingerprint(&self) -> String {
        self.key.fingerprint(HashAlg::Sha256).to_string()
    }

    /// `<algorithm> <base64>[ <comment>]` with single spaces and padded base64: what is stored
    /// and sent to the provider. Parsing it again yields an equal key.
    pub fn canonical(&self) -> String {
        self.canonical.clone()
    }
}

impl fmt::Display for SshPublicKey {
    /// The [canonical](SshPublicKey::canonical) line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.canonical)
    }
}

impl fmt::Debug for SshPublicKey {
    /// Summarised: the key data itself would only bury the interesting parts.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SshPublicKey")
            .field("algorithm", &self.algorithm())
            .field("bits", &self.bits)
            .field("fingerprint", &self.fingerprint())
            .field("comment", &self.comment)
            .finish()
    }
}

impl FromStr for SshPublicKey {
    type Err = SshKeyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        SshPublicKey::parse(s)
    }
}

/// Why a pasted public key was refused. Messages name the `public_key` field, say what to do,
/// and never include any of the pasted text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SshKeyError {
    #[error("public_key must not be empty")]
    Empty,

    #[error(
        "public_key is too long ({bytes} bytes); an SSH public key is at most 16384 bytes \
         (16 KiB). Paste the contents of your .pub file, e.g. ~/.ssh/id_ed25519.pub"
    )]
    TooLong { bytes: usize },

    #[error(
        "public_key is a private key. A private key must never be shared with anyone, Mimiry \
         included. Paste your public key instead: the contents of the .pub file, e.g. \
         ~/.ssh/id_ed25519.pub (print it with: cat ~/.ssh/id_ed25519.pub)"
    )]
    PrivateKey,

    #[error(
        "public_key is in SSH2 (RFC 4716) format; paste it in OpenSSH format instead: one line \
         starting with the key type, e.g. ssh-ed25519 AAAA... Convert it with: \
         ssh-keygen -i -f key.pub"
    )]
    Ssh2Format,

    #[error(
        "public_key is a PEM public key; paste it in OpenSSH format instead: one line starting \
         with the key type, e.g. ssh-ed25519 AAAA... Convert it with: \
         ssh-keygen -i -m PKCS8 -f key.pem (or -m PEM for a BEGIN RSA PUBLIC KEY file)"
    )]
    PemPublicKey,

    #[error(
        "public_key must be a single line holding one key, but it has {lines} lines. Add one \
         key at a time; if your key was wrapped across lines, join it back into one line"
    )]
    MultipleLines { lines: usize },

    #[error(
        "public_key has text before the key type (authorized_keys options such as from=\"...\" \
         or command=\"...\", or a host name); paste just the public key: the line from your \
         .pub file that starts with the key type, e.g. ssh-ed25519 AAAA..."
    )]
    OptionsBeforeKey,

    #[error(
        "public_key has an unsupported key type; supported types are ssh-ed25519, ssh-rsa \
         (2048 bits or more), ecdsa-sha2-nistp256, ecdsa-sha2-nistp384 and \
         ecdsa-sha2-nistp521. Paste the whole line from your .pub file, e.g. \
         ~/.ssh/id_ed25519.pub"
    )]
    UnsupportedType,

    #[error(
        "public_key is an ssh-dss (DSA) key; DSA keys are insecure and not supported. \
         Generate a new key with: ssh-keygen -t ed25519"
    )]
    Dsa,

    #[error(
        "public_key is a {bits}-bit RSA key; RSA keys must be at least 2048 bits. Generate a \
         new key with: ssh-keygen -t ed25519 (or ssh-keygen -t rsa -b 4096)"
    )]
    RsaTooSmall { bits: u32 },

    #[error(
        "public_key is a {bits}-bit RSA key; RSA keys larger than 16384 bits are not supported. \
         Generate a new key with: ssh-keygen -t ed25519"
    )]
    RsaTooLarge { bits: u32 },

    #[error("public_key has a key type but no key data; paste the whole line from your .pub file")]
    MissingKeyData,

    #[error(
        "public_key key data is not valid base64; copy the whole line from your .pub file \
         again, unchanged"
    )]
    InvalidBase64,

    /// The type in front and the type inside the key data differ. `actual` is named only when
    /// it is a type we know, so arbitrary pasted bytes are never echoed.
    #[error(
        "public_key starts with {declared} but its key data is {}; copy the whole line from \
         your .pub file again, unchanged",
        describe_actual(.declared, .actual)
    )]
    AlgorithmMismatch {
        declared: &'static str,
        actual: Option<&'static str>,
    },

    #[error(
        "public_key key data is invalid: {0}; copy the whole line from your .pub file again, \
         unchanged"
    )]
    InvalidKeyData(KeyDataProblem),

    #[error(
        "public_key contains control characters; copy the line from your .pub file again as \
         plain text"
    )]
    ControlCharacters,
}

/// What is wrong inside otherwise well-formed base64 key data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyDataProblem {
    /// A length field points past the end: the key was cut short.
    Truncated,
    /// Bytes left over after the last field.
    TrailingBytes,
    /// Decodable, but not in the one encoding OpenSSH writes (a length field that disagrees
    /// with what follows).
    NotCanonical,
    /// An `mpint` with its sign bit set; RSA numbers are positive.
    NegativeInteger,
    /// An `mpint` with a redundant leading zero byte. OpenSSH never writes one; `ssh-key`
    /// refuses it, as it makes the same key encode two ways.
    NonMinimalInteger,
    /// An ed25519 key that is not 32 bytes.
    Ed25519Length,
    /// The curve named inside an ECDSA key is not the curve of its type.
    CurveMismatch,
    /// The ECDSA point is not `0x04 || X || Y` with coordinates of the curve's size.
    EcPointEncoding,
    /// The ECDSA point's coordinates do not satisfy the curve equation.
    EcPointNotOnCurve,
    /// An RSA modulus that is zero or even, so not a product of two odd primes.
    RsaModulus,
    /// An RSA public exponent that is even, below 3 or over 64 bits.
    RsaExponent,
}

impl fmt::Display for KeyDataProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use KeyDataProblem::*;
        f.write_str(match self {
            Truncated => "it is truncated",
            TrailingBytes => "it has unexpected bytes after the key",
            NotCanonical => "it is not in the standard SSH encoding",
            NegativeInteger => "it holds a negative number",
            NonMinimalInteger => "it holds a number with redundant leading zero bytes",
            Ed25519Length => "an ssh-ed25519 key must be 32 bytes",
            CurveMismatch => "the curve inside the key does not match its type",
            EcPointEncoding => "the curve point has the wrong length or encoding for its curve",
            EcPointNotOnCurve => "the curve point is not on the curve",
            RsaModulus => "the RSA modulus is not valid",
            RsaExponent => {
                "the RSA public exponent is not valid (it must be odd, at least 3 and at most \
                 64 bits)"
            }
        })
    }
}

/// The key data half of [`SshKeyError::AlgorithmMismatch`]'s message.
fn describe_actual(declared: &str, actual: &Option<&str>) -> String {
    match actual {
        Some(actual) => format!("an {actual} key"),
        None => format!("not an {declared} key"),
    }
}

impl From<KeyDataProblem> for SshKeyError {
    fn from(problem: KeyDataProblem) -> Self {
        SshKeyError::InvalidKeyData(problem)
    }
}

impl From<SshKeyError> for ApiError {
    fn from(e: SshKeyError) -> Self {
        ApiError::validation(FIELD, e.to_string())
    }
}

// ---------------------------------------------------------------------------------------------
// Recognising the wrong thing pasted.

/// Line breaks, including the rarer vertical-whitespace characters `trim` would otherwise let
/// hide a second line inside "one" line.
fn is_line_break(c: char) -> bool {
    matches!(
        c,
        '\n' | '\r' | '\u{0B}' | '\u{0C}' | '\u{85}' | '\u{2028}' | '\u{2029}'
    )
}

/// Any private key format a user is likely to have: PEM armour of every flavour (`OPENSSH`,
/// `RSA`, `EC`, `DSA`, PKCS#8 plain and `ENCRYPTED`, ssh.com's `SSH2 ENCRYPTED`, including just
/// the `END` line of a partial copy, with or without its dashes), PuTTY `.ppk` (its header or
/// its private fields), and an OpenSSH private key body whose armour lines were left out.
/// Deliberately broad, as a miss lets a private key go on to be treated as data; but a valid
/// key line never matches, whatever its comment says ("my weekend private key" is fine).
fn looks_like_private_key(text: &str) -> bool {
    text.split(is_line_break).any(|line| {
        let upper = line.trim().to_ascii_uppercase();
        armour_mentions(&upper, "PRIVATE KEY")
            || upper.contains("PUTTY-USER-KEY-FILE-")
            || upper.starts_with("PRIVATE-LINES:")
            || upper.starts_with("PRIVATE-MAC:")
            || line
                .split_whitespace()
                .any(|t| t.starts_with(OPENSSH_PRIVATE_MAGIC_B64))
    })
}

/// Whether an upper-cased line has the word `BEGIN` or `END` (not "WEEKEND") followed later by
/// `what`, as PEM and RFC 4716 armour lines do.
fn armour_mentions(upper: &str, what: &str) -> bool {
    ["BEGIN ", "END "].iter().any(|word| {
        upper.match_indices(word).any(|(i, _)| {
            let word_start = i == 0 || !upper.as_bytes()[i - 1].is_ascii_alphanumeric();
            word_start && upper[i..].contains(what)
        })
    })
}

/// `---- BEGIN SSH2 PUBLIC KEY ----` (RFC 4716, `ssh-keygen -e`, PuTTYgen's "Save public key").
fn is_ssh2_armour(line: &str) -> bool {
    line.starts_with('-') && line.to_ascii_uppercase().contains("SSH2 PUBLIC KEY")
}

/// `-----BEGIN PUBLIC KEY-----` (PKCS#8/SPKI) or `-----BEGIN RSA PUBLIC KEY-----` (PKCS#1).
fn is_pem_public_armour(line: &str) -> bool {
    line.starts_with('-') && armour_mentions(&line.to_ascii_uppercase(), "PUBLIC KEY")
}

/// Whether an unrecognised first token is really something placed before a key: an
/// `authorized_keys` option list (`from="..."`, `no-pty,command="..."`, `restrict`) or a
/// `known_hosts` host name. Told apart from a merely unknown type by the option syntax, or by a
/// key type turning up later in the line.
fn has_prefix_before_key_type(first: &str, line: &str) -> bool {
    const BARE_OPTIONS: [&str; 14] = [
        "agent-forwarding",
        "cert-authority",
        "no-agent-forwarding",
        "no-port-forwarding",
        "no-pty",
        "no-touch-required",
        "no-user-rc",
        "no-x11-forwarding",
        "port-forwarding",
        "pty",
        "restrict",
        "user-rc",
        "verify-required",
        "x11-forwarding",
    ];
    first.contains(['=', '"', ','])
        || BARE_OPTIONS.contains(&first.to_ascii_lowercase().as_str())
        || line
            .split_whitespace()
            .skip(1)
            .any(|t| supported_algorithm(t).is_some() || t == "ssh-dss")
}

// ---------------------------------------------------------------------------------------------
// The key data: decoded by `ssh-key`, then held to our policy.

/// The supported type named `name`, as a `'static` name from [`SUPPORTED_ALGORITHMS`].
fn supported_algorithm(name: &str) -> Option<&'static str> {
    SUPPORTED_ALGORITHMS.iter().copied().find(|a| *a == name)
}

/// Decodes the key data of a line whose type is `algorithm` (one of ours); returns the key and
/// its size in bits.
fn decode_key_data(algorithm: &'static str, blob: &[u8]) -> Result<(KeyData, u32), SshKeyError> {
    // The type named inside first, so a spliced or hand-edited line is reported as such rather
    // than as whatever its data then fails on.
    let mut reader = KeyDataReader::new(blob);
    let inner = Vec::<u8>::decode(&mut reader).map_err(|_| KeyDataProblem::Truncated)?;
    if inner != algorithm.as_bytes() {
        // Named only if it is a type we know: never echo arbitrary bytes.
        let actual = std::str::from_utf8(&inner)
            .ok()
            .and_then(|s| supported_algorithm(s).or((s == "ssh-dss").then_some("ssh-dss")));
        return Err(SshKeyError::AlgorithmMismatch {
            declared: algorithm,
            actual,
        });
    }

    let mut reader = KeyDataReader::new(blob);
    let key = KeyData::decode(&mut reader).map_err(|e| reader.problem(&e, algorithm))?;
    // ssh-key reads some declared lengths loosely (an ed25519 key is the first 32 bytes of its
    // string, whatever length the string declares), so the key must re-encode to exactly the
    // pasted bytes: then what we store, what sshd on the instance parses and what the
    // fingerprint is computed over are one and the same.
    let mut encoded = Vec::with_capacity(blob.len());
    match key.encode(&mut encoded) {
        Ok(()) if encoded == blob => {}
        Ok(()) if blob.starts_with(&encoded) => return Err(KeyDataProblem::TrailingBytes.into()),
        _ if algorithm == "ssh-ed25519" => return Err(KeyDataProblem::Ed25519Length.into()),
        _ => return Err(KeyDataProblem::NotCanonical.into()),
    }
    let bits = match &key {
        KeyData::Ed25519(_) => 256,
        KeyData::Rsa(rsa) => check_rsa(rsa)?,
        KeyData::Ecdsa(point) => check_ecdsa(point)?,
        // The name inside is one of ours, so ssh-key decoded one of the three kinds above.
        _ => return Err(SshKeyError::UnsupportedType),
    };
    Ok((key, bits))
}

/// The key data as `ssh-key` reads it, remembering whether a read ran past the end: the crate
/// reports a key cut short and a field of the wrong size with the same `Length` error, and
/// only the first is "truncated" to the user.
struct KeyDataReader<'a> {
    rest: &'a [u8],
    overran: bool,
}

impl<'a> KeyDataReader<'a> {
    fn new(blob: &'a [u8]) -> Self {
        KeyDataReader {
            rest: blob,
            overran: false,
        }
    }

    /// What a decoding failure means, in the terms of [`KeyDataProblem`]. The crate's error is
    /// only classified, never shown: some variants carry text taken from the key data.
    fn problem(&self, error: &ssh_key::Error, algorithm: &str) -> KeyDataProblem {
        use ssh_encoding::Error as Encoding;
        use ssh_key::Error;
        // A length over ssh-encoding's 1 MiB cap points far past the end of a 16 KiB paste.
        if self.overran || matches!(error, Error::Encoding(Encoding::Overflow)) {
            return KeyDataProblem::Truncated;
        }
        match (algorithm, error) {
            // ssh-key refuses mpints with a redundant leading zero byte; nothing else in a
            // public key is an mpint.
            (_, Error::FormatEncoding) => KeyDataProblem::NonMinimalInteger,
            ("ssh-ed25519", _) => KeyDataProblem::Ed25519Length,
            // The curve name is unknown, or the point's size is another curve's.
            (_, Error::AlgorithmUnknown | Error::Encoding(Encoding::Label(_))) => {
                KeyDataProblem::CurveMismatch
            }
            (a, _) if a.starts_with("ecdsa-") => KeyDataProblem::EcPointEncoding,
            _ => KeyDataProblem::Truncated,
        }
    }
}

impl Reader for KeyDataReader<'_> {
    fn read<'o>(&mut self, out: &'o mut [u8]) -> ssh_encoding::Result<&'o [u8]> {
        let read = self.rest.read(out);
        self.overran |= read.is_err();
        read
    }

    fn remaining_len(&self) -> usize {
        self.rest.len()
    }
}

/// What `ssh-key` leaves to us for RSA: the numbers' sanity and the size policy. Returns the
/// modulus size in bits.
fn check_rsa(key: &RsaPublicKey) -> Result<u32, SshKeyError> {
    let e = magnitude(&key.e)?;
    let n = magnitude(&key.n)?;
    // A product of two odd primes is odd.
    if n.last().is_none_or(|b| b & 1 == 0) {
        return Err(KeyDataProblem::RsaModulus.into());
    }
    // e = 1 makes "encryption" the identity and an even e is not invertible; over 64 bits
    // OpenSSL refuses the key for large moduli. Real keys use 65537 (or 3, or 35).
    if e.last().is_none_or(|b| b & 1 == 0) || e == [1] || e.len() > 8 {
        return Err(KeyDataProblem::RsaExponent.into());
    }
    // Leading zero bytes are gone (ssh-key refuses non-minimal mpints), so this is exact.
    let bits = match n.first() {
        None => 0,
        Some(&top) => (n.len() as u32 - 1) * 8 + (8 - top.leading_zeros()),
    };
    if bits < MIN_RSA_BITS {
        return Err(SshKeyError::RsaTooSmall { bits });
    }
    if bits > MAX_RSA_BITS {
        return Err(SshKeyError::RsaTooLarge { bits });
    }
    Ok(bits)
}

/// The big-endian magnitude of a non-negative mpint (empty for zero).
fn magnitude(n: &Mpint) -> Result<&[u8], KeyDataProblem> {
    if n.as_bytes().is_empty() {
        return Ok(&[]);
    }
    n.as_positive_bytes().ok_or(KeyDataProblem::NegativeInteger)
}

/// ECDSA: ssh-key has matched the point's size to the named curve; the curve crates check that
/// it is a valid public key, i.e. on the curve and not the identity (what OpenSSH's
/// `sshkey_ec_validate_public` checks before it will use one). Returns the curve size in bits.
fn check_ecdsa(point: &EcdsaPublicKey) -> Result<u32, SshKeyError> {
    // Only the uncompressed form, `0x04 || X || Y`: it is what OpenSSH writes and accepts,
    // while ssh-key also takes the compressed one.
    let bytes = point.as_sec1_bytes();
    if bytes.first() != Some(&0x04) {
        return Err(KeyDataProblem::EcPointEncoding.into());
    }
    let (valid, bits) = match point {
        EcdsaPublicKey::NistP256(_) => (p256::PublicKey::from_sec1_bytes(bytes).is_ok(), 256),
        EcdsaPublicKey::NistP384(_) => (p384::PublicKey::from_sec1_bytes(bytes).is_ok(), 384),
        EcdsaPublicKey::NistP521(_) => (p521::PublicKey::from_sec1_bytes(bytes).is_ok(), 521),
    };
    if !valid {
        return Err(KeyDataProblem::EcPointNotOnCurve.into());
    }
    Ok(bits)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::StatusCode;

    // Real keys made with OpenSSH 9.2 (`ssh-keygen -t ... -N '' -C ...`) and PuTTYgen 0.78,
    // with the fingerprints `ssh-keygen -lf` printed for them. Throwaway keys generated for
    // these tests only; the private ones are here precisely so that pasting one is tested.
    const ED25519: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAID3C6VXIVgP1ZyyB+tilX36I9ZsZUQL5ocy7Rf+Z/Hge alice@example.com";
    const ED25519_FP: &str = "SHA256:2rggsGboofw87hAeG2fKjr6D9vOE7SkNtegF54CnZ9M";
    const RSA_2048: &str = "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQCz/zulMnGF0mLE7dArZK6qm05I4lW7De3HlfeXvqCS+b9I52JEwMxHTpAfvJesW15jkpAo/j9Tdc81eK7pwUf7va5rkHXQ9hNmHFgONOpFP23y3JGn5H0QdrXubs9LX6oPSyM8j32pMbDY3I0GWRQh2xvf9ZHU8/v4ljCN/3u2YipFKbGMU9GdbIIKuo1ws0PtXJWj0zRuma1CHOWJhhdF+5uJMc7+sT3EoFcc6bkzF3fzuxPPM+qAO9EHB4BPXxavrkCwIvGxevMLHUu71N842juyGCaJbiDDKdpiohiV7Qt5mo4oXixRB/DR5Mt+cFgC3SuXU3sM+oiAP/7kH+sf bob@laptop";
    const RSA_2048_FP: &str = "SHA256:3SNefRUmmEu4oHAohnguQWwxyCyD6C1AJ7pf/aOe1e4";
    const RSA_4096: &str = "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAACAQC06XluNXIK1nKyAikjfd8y6EybPOQhZKjit7vPVa0dMOjl67Mf3VzpznlLSVl30AgDTxagOjc/yZHOs6G+bstCqxKFIrURSK26ut+Qu/Y/P+flKeQCYfD5QAUtnvdmGuvnvHQOisW+n68mT8EkHsbAebIpLDss/B+hpb6co/BoIPfo+JYxeZ7r9hjRVLMGvYsiPs3cv6EvpTiExqTy53x8Kef6KwosEkvrmGZavaEEocHPGUDTazuUXI1kIUSh5Fc+LYSzo08p5QJn6tzyohMnmpl2LqhVNm7GNWHVhrs9ARDAuG+Fjq1qH6SZdq49npxL6T4nyC5tubnSNgFriwc/xtqNchbMSJHgvZDjmqQsNcFg71swdjv2eFN7gcD2UBy6aRmtf4Mxbu3fOnu40c2IS3Xq3VSSx9I/5bg1tpmFMd9p6y02nAYn+Vhe7aEDfYtIcfg0TqRDpL4JOq/0ttwkhKtmlDY/fv1Y/fVKPr8G7EKe+XP2TrD7Fth7leHy2mGb7O/LSpDqhLpNkxhDJSiMVsnH5KN7nIFJ5iZZJtXfKyvUxkU6ldX0m8apDLmydMctlx6bk9eIuSrRIuxyERYZdX2sSpDASBgvbesTsMU9lqdrJi1SsOPaP99HYMRUQY3R47v2c4w6cflIbeWknI9w3Iiw9S4np16zljrqgcAYbw== carol work key";
    const RSA_4096_FP: &str = "SHA256:dQO8Qx00F/S0hBsuzQ0yzEqN/88RHFxy07iBBKuHN+E";
    const ECDSA_256: &str = "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBEGfzhyKCEh5jK/UnocnxrqlA4HNo1oszCeMPfLe644/y7ctU0JaJ2+DoPazergloeG66/u1Dc7AglWy2Mb/CWI= ec256";
    const ECDSA_256_FP: &str = "SHA256:dLrJFLaamClczbi6KP/Xy5NkG7pmJmgiSbh9u/WgdvM";
    const ECDSA_384: &str = "ecdsa-sha2-nistp384 AAAAE2VjZHNhLXNoYTItbmlzdHAzODQAAAAIbmlzdHAzODQAAABhBDXeybB5R7v1QyMiL7yrgrHRSVn7+58gLf9+k+SjGj9y+66OtzBNXNpyweU4Sb0+DOhLmhtD7A85epUA44Xax0ajkM+l2UZaIPEBUnAlyexlpmT/mCmEgLEnmfwz6kzlZA== ec384";
    const ECDSA_384_FP: &str = "SHA256:iE2dPByWxKc8Xf2aPucenNwuWr6ZYztm4WfRQ1/aW+M";
    const ECDSA_521: &str = "ecdsa-sha2-nistp521 AAAAE2VjZHNhLXNoYTItbmlzdHA1MjEAAAAIbmlzdHA1MjEAAACFBAAJL3ZCZakI5rdAoEwuoWX7mXifgoo4JaXPfy0IFEWn6L7HNBFvJ4ONGAT2pO6Vl5zMqP2uqgehRdWj+aTZvyEgcAC3AfJB99pwapMdf5K7ZW7h1QExXkGhybYjGkBdbflrgiqPoVNhN0Z641/ooCWX268GnVD7vpZrxyheFxtNQR2kGQ== ec521";
    const ECDSA_521_FP: &str = "SHA256:Kxg5cmwh9EgEKI4ECl8vp+p4XD5CdYShsPON0HhX2dk";
    const PUTTYGEN_ED25519: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHY/OpgHMvsv6/3AdOW7gO9RVt3CIpOYNCaxZkgrOnKK putty key";
    const PUTTYGEN_ED25519_FP: &str = "SHA256:wHuvSmeZoXu9e7AdvgV7G51A7MW8xeBQ3V+GpR6ypYE";
    const RSA_1024: &str = "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAAAgQCqrf8t9fyqx3EKdicuwVAkwoIPqoGPRYCljXzgiiAfbttvGNa0Pu30/Me8NAk725APxZg8o25JkC6SbVxpH4TjBBYCWTljhEetMzidScf/vUlNgFsjHt/M66gNqISGuRkRkaodi4mMcylia2WVh3C/3i05XfXMPq5AtSaAigwLvQ== old";
    const DSA: &str = "ssh-dss AAAAB3NzaC1kc3MAAACBAIavvRHH45Dij4o2e/8liyLVjlr7iB1n2R2j1Q/c7Armtlo2xXN58ofFQdh/vmnb8A7uVAGqFH3GetkNJkp78PKYdbSyWFm5hCKeTYQMI5vyy0kcODBf6RN52tRDu2eoTt2qBrc5QNzMpsSOHo/intj/upPz5JDE/iqbvsR7XIo3AAAAFQCAPbdphyId/7/QWZU5qY0178xjTwAAAIBLvjIywJD58Clgmo/8GfvcsypLCDjB68tcEoALCZ2TQBBXBcKqX0BKsU0UlBQGX0Y08UT3G1PmdAEK+9EP3LfiECGnchb+E49wwKce0BtNgJWcra1F+wOPb1cmhQmfl3EYZLkAIHX0LdcZHB+F/DFFc3T3GF5Pe/ORJCf2H7uJvgAAAIBTPwFE/SQlVs/K44LmFvDwFXT0iKDOJQ75lgz0RoW3C9ZwVGSXeRrWpccFdiwyY8BJvwFF7F6x6j3nHVQ6wzxlc/Sh+iC598pAus0zK+khTtSlOwQ9NynyA4yaGkbxqYo35FkXue/PjKZ7YIpGcWvmHFMFBmhNydHLZEl5BBIr8g== dsa";
    const PRIVATE_OPENSSH_ED25519: &str = concat!(
        "-----BEGIN OPENSSH PRIVATE KEY-----\n",
        "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW\n",
        "QyNTUxOQAAACA9wulVyFYD9WcsgfrYpV9+iPWbGVEC+aHMu0X/mfx4HgAAAJh9NwX1fTcF\n",
        "9QAAAAtzc2gtZWQyNTUxOQAAACA9wulVyFYD9WcsgfrYpV9+iPWbGVEC+aHMu0X/mfx4Hg\n",
        "AAAEAAQChHIAuccqj8zimhtxVeq3Wc2O3rf2usBH2KxBKb/D3C6VXIVgP1ZyyB+tilX36I\n",
        "9ZsZUQL5ocy7Rf+Z/HgeAAAAEWFsaWNlQGV4YW1wbGUuY29tAQIDBA==\n",
        "-----END OPENSSH PRIVATE KEY-----\n",
    );
    const PRIVATE_OPENSSH_ENCRYPTED: &str = concat!(
        "-----BEGIN OPENSSH PRIVATE KEY-----\n",
        "b3BlbnNzaC1rZXktdjEAAAAACmFlczI1Ni1jdHIAAAAGYmNyeXB0AAAAGAAAABAMOLVGwi\n",
        "dqfokiuqaqpxANAAAAEAAAAAEAAAAzAAAAC3NzaC1lZDI1NTE5AAAAIB5qLoHoxSBN9u88\n",
        "MWu850lUvWJHZWBQv3tBqKYR8USYAAAAkJCXn3jUvMlqTkd7n0BjFxIMsCoylLxLvni8oV\n",
        "oZwZ0vg2oyEdML9v5elT4NsOt0H2m/ekWo/aH/2oStvXRvKGrS8U6VxId20L30Ms09OLtk\n",
        "iKZFv8K0/qefdMz79AEzR+vFOcQPqnywvDFoYxUyWh0/5IwDKEzIrkEb0+72W+LwIsW5gz\n",
        "kwARVgwN80AEjhmQ==\n",
        "-----END OPENSSH PRIVATE KEY-----\n",
    );
    const PRIVATE_PEM_RSA: &str = concat!(
        "-----BEGIN RSA PRIVATE KEY-----\n",
        "MIICXQIBAAKBgQDA9Me0ZrXacTQoA0ct7KQRfPr/WtSBPXiUEJN1pI+Dkwkot5GJ\n",
        "VrtmJPR4eaXAvF2RiZ2Z6/eyCecPtXiEBW70o430DslHrBiH+P24gBO1Yt5EOJEc\n",
        "7nquRrS3GEL/HhfKalTXAm3XivYxohOtFh+qABif22ruE5kpTeTImVRy1QIDAQAB\n",
        "AoGBAIPSduDLTq/WqOAxJR69zXTZIozzm7xTp53YGTXE3/rup9I2Xuop48srsgzg\n",
        "Zpne1jnIf3AZolXyp/W2b4gaQisTbThcP1czwObgVa4oTSk7tVcBvlHN9azhO3op\n",
        "+AWohGCc0yNZcGafJ4TD0EuPgTc02mlzfjeK3jwtZX5xbrqBAkEA/hyNpEFfzOCg\n",
        "y0mRSYe8Cbpb4B0IyeQ2+KZ8tMOEJ785mYeuVmv6EisxzKYg4QWdT79qBh8k6BTS\n",
        "yld/IAjuoQJBAMJj4PwGp2MHVUFEQR1QBrkEg16yARntWoW6Ipg5z9g6/6E8rTA/\n",
        "l+mXcWofdtXv5mzngAEPu3bPLst+iULg27UCQEbR/GPP2HxICmg9q6E7lBt99ccj\n",
        "MGTcFrn75HuYlgdh0xLH7r2lQD+6DBoGHtm379ze8xSbr3SDATBlbEeoVaECQQC+\n",
        "wPJLfmANrml75XWcRSaDsqkTaMvp3F/jMFe4V6rc/nBRkdBFs3HoOMODpyKfJ45P\n",
        "uhCDeiO0n/TEngQmC6+tAkA1fc0mIx1tzXMXbYdgS0iDaayd/LzoD7mi+WrY2IKr\n",
        "TJqwTwYTuDIufmf37j9znxs0gzAcJe1UTFsHzQjcTKhs\n",
        "-----END RSA PRIVATE KEY-----\n",
    );
    const PRIVATE_PEM_EC: &str = concat!(
        "-----BEGIN EC PRIVATE KEY-----\n",
        "MHcCAQEEICVtL2dvNrAL9jCCQNJCteBmo8QXzH/pk8p2fA0xd8pOoAoGCCqGSM49\n",
        "AwEHoUQDQgAEuvF3HIlZ1wunqfB7YYulmnj5TG5qg9UrfzzHe+mhKQLte/eOZbHY\n",
        "JDBVpFscBgDEXe57GhQz3ArA81MIlpeHGQ==\n",
        "-----END EC PRIVATE KEY-----\n",
    );
    const PRIVATE_PKCS8: &str = concat!(
        "-----BEGIN PRIVATE KEY-----\n",
        "MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgj/8HkQ1bdDe5I1xn\n",
        "ZCoA2yKgA1MPxB/dLPU2+MI9Ul6hRANCAARPlHv+ClP9iJwQ0gsrM+jzrW5+vC01\n",
        "4i/Q89SAftiBTmSiiZFIXjFdYxw31TgiWQVW4c4MJxDtggxyV8VpyqfG\n",
        "-----END PRIVATE KEY-----\n",
    );
    const PRIVATE_PEM_DSA: &str = concat!(
        "-----BEGIN DSA PRIVATE KEY-----\n",
        "MIIBvAIBAAKBgQCpjcvPf34BTSu+vxamM5TMGVTrukwCphu6XmlyJuR2iO2iu0Da\n",
        "4oMxD05u1ufCA6e2X9atSBPmdvjE9KxUnL2zIsX4a7wNa6O1GdZQPQCmV85bo73K\n",
        "IrW3BkSzCxxrVB2n6+Az7dl2iisg7Ah/MmmpGG5w9hlSOJzvXFbix1GCdQIVALjF\n",
        "3bg9lA/Bb5rdGcfcBXy0S58LAoGBAJUKWqvcXd2qxwVUChikgVoebE7BBBMS20Xe\n",
        "FDZsqF5EBvFzTuT4ZZkE3vrTWUr+kip1zVFor5V0ePlwpjRh3VsaOcfdCHqXU1Pn\n",
        "zqHsHEKJGHmnuIXPnp+uDbVPfBP66zgvWZgnhtJ7I7dF71sD01i8GWatBuDN88S/\n",
        "3hICWzieAoGAfaI3hX8wc2DJ386qJ8FMym9jogTY3kpjjpH9tFVdJknaySjbt5H1\n",
        "L5LKA2c7255nKFGhMNwrtBxh8olRzOaBXe1ineF42mof7tctql+F/ZQd05Q7MFoa\n",
        "uW2C8+ZG53zM8u5VoCpaB8DJObkE+e5ZDNn/Ic1shcIpgy1QWI78Z54CFQCzoQPm\n",
        "QQEU+bX12b0qIRuUvP7T/g==\n",
        "-----END DSA PRIVATE KEY-----\n",
    );
    const PRIVATE_PUTTY: &str = concat!(
        "PuTTY-User-Key-File-3: ssh-ed25519\n",
        "Encryption: none\n",
        "Comment: putty key\n",
        "Public-Lines: 2\n",
        "AAAAC3NzaC1lZDI1NTE5AAAAIHY/OpgHMvsv6/3AdOW7gO9RVt3CIpOYNCaxZkgr\n",
        "OnKK\n",
        "Private-Lines: 1\n",
        "AAAAIOABNtvGPRwCYkZLCoXMIslyujo9ahPNAgBywEnmbId7\n",
        "Private-MAC: 3a3a7c917411c5490c1e34aa16e32142999df155d1844aa51243894a68a62afc\n",
    );
    const PUBLIC_SSH2: &str = concat!(
        "---- BEGIN SSH2 PUBLIC KEY ----\n",
        "Comment: \"256-bit ECDSA, converted by root@vm from OpenSSH\"\n",
        "AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBEGfzhyKCEh5jK/Uno\n",
        "cnxrqlA4HNo1oszCeMPfLe644/y7ctU0JaJ2+DoPazergloeG66/u1Dc7AglWy2Mb/CWI=\n",
        "---- END SSH2 PUBLIC KEY ----\n",
    );
    const PUBLIC_PEM: &str = concat!(
        "-----BEGIN PUBLIC KEY-----\n",
        "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEuvF3HIlZ1wunqfB7YYulmnj5TG5q\n",
        "g9UrfzzHe+mhKQLte/eOZbHYJDBVpFscBgDEXe57GhQz3ArA81MIlpeHGQ==\n",
        "-----END PUBLIC KEY-----\n",
    );

    /// Every accepted fixture: (line, algorithm, bits, comment, fingerprint by ssh-keygen -lf).
    const VALID: [(&str, &str, u32, &str, &str); 7] = [
        (ED25519, "ssh-ed25519", 256, "alice@example.com", ED25519_FP),
        (RSA_2048, "ssh-rsa", 2048, "bob@laptop", RSA_2048_FP),
        (RSA_4096, "ssh-rsa", 4096, "carol work key", RSA_4096_FP),
        (ECDSA_256, "ecdsa-sha2-nistp256", 256, "ec256", ECDSA_256_FP),
        (ECDSA_384, "ecdsa-sha2-nistp384", 384, "ec384", ECDSA_384_FP),
        (ECDSA_521, "ecdsa-sha2-nistp521", 521, "ec521", ECDSA_521_FP),
        (
            PUTTYGEN_ED25519,
            "ssh-ed25519",
            256,
            "putty key",
            PUTTYGEN_ED25519_FP,
        ),
    ];

    const PRIVATE: [&str; 7] = [
        PRIVATE_OPENSSH_ED25519,
        PRIVATE_OPENSSH_ENCRYPTED,
        PRIVATE_PEM_RSA,
        PRIVATE_PEM_EC,
        PRIVATE_PKCS8,
        PRIVATE_PEM_DSA,
        PRIVATE_PUTTY,
    ];

    /// Parses, expecting a refusal with exactly `expected`, and checks that the message echoes
    /// none of the pasted material (any long token that is not a key type name).
    #[track_caller]
    fn assert_refused(input: &str, expected: SshKeyError) {
        let err = SshPublicKey::parse(input).expect_err("should be refused");
        assert_eq!(err, expected);
        assert_no_echo(input, &err);
    }

    #[track_caller]
    fn assert_no_echo(input: &str, err: &SshKeyError) {
        let message = err.to_string();
        assert!(message.starts_with("public_key "), "{message}");
        for token in input.split_whitespace() {
            if token.len() >= 12 && !SUPPORTED_ALGORITHMS.contains(&token) {
                assert!(
                    !message.contains(token),
                    "message echoes `{token}`: {message}"
                );
            }
        }
    }

    /// The decoded key data of a fixture line.
    fn blob_of(line: &str) -> Vec<u8> {
        STANDARD
            .decode(line.split_whitespace().nth(1).unwrap())
            .unwrap()
    }

    fn line(algorithm: &str, blob: &[u8]) -> String {
        format!("{algorithm} {}", STANDARD.encode(blob))
    }

    /// SSH wire `string`.
    fn string(bytes: &[u8]) -> Vec<u8> {
        let mut out = (bytes.len() as u32).to_be_bytes().to_vec();
        out.extend_from_slice(bytes);
        out
    }

    /// SSH wire `mpint` of a non-negative big-endian magnitude, minimally encoded.
    fn mpint(magnitude: &[u8]) -> Vec<u8> {
        let start = magnitude
            .iter()
            .position(|&b| b != 0)
            .unwrap_or(magnitude.len());
        let mut bytes = magnitude[start..].to_vec();
        if bytes.first().is_some_and(|b| b & 0x80 != 0) {
            bytes.insert(0, 0);
        }
        string(&bytes)
    }

    fn rsa_blob(e: &[u8], n: &[u8]) -> Vec<u8> {
        [string(b"ssh-rsa"), mpint(e), mpint(n)].concat()
    }

    /// A fixture's key data, decoded by ssh-key.
    fn key_data_of(line: &str) -> KeyData {
        KeyData::decode(&mut &blob_of(line)[..]).unwrap()
    }

    /// The modulus of the 2048-bit fixture.
    fn rsa_2048_modulus() -> Vec<u8> {
        let key = key_data_of(RSA_2048);
        key.rsa().unwrap().n.as_positive_bytes().unwrap().to_vec()
    }

    /// An odd modulus of exactly `bits` bits (not a real RSA modulus; size checks only).
    fn odd_modulus(bits: usize) -> Vec<u8> {
        let mut n = vec![0xa5; bits.div_ceil(8)];
        n[0] = 1 << ((bits - 1) % 8);
        *n.last_mut().unwrap() |= 1;
        n
    }

    fn ecdsa_blob(algorithm: &str, curve: &str, point: &[u8]) -> Vec<u8> {
        [
            string(algorithm.as_bytes()),
            string(curve.as_bytes()),
            string(point),
        ]
        .concat()
    }

    /// The uncompressed point (0x04 || X || Y) of an ECDSA fixture.
    fn ec_point(line: &str) -> Vec<u8> {
        key_data_of(line).ecdsa().unwrap().as_sec1_bytes().to_vec()
    }

    /// The P-256 field prime p, from SEC 2.
    const P256_P: [u8; 32] = [
        0xff, 0xff, 0xff, 0xff, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff,
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    ];

    // --- accepted ------------------------------------------------------------------------

    #[test]
    fn accepts_every_supported_type_with_the_fingerprint_ssh_keygen_prints() {
        for (input, algorithm, bits, comment, fingerprint) in VALID {
            let key = SshPublicKey::parse(input).unwrap_or_else(|e| panic!("{algorithm}: {e}"));
            assert_eq!(key.algorithm(), algorithm);
            assert_eq!(key.bits(), bits, "{algorithm}");
            assert_eq!(key.comment(), Some(comment));
            assert_eq!(key.fingerprint(), fingerprint, "{algorithm}");
            assert_eq!(key.canonical(), input, "already canonical");
            assert_eq!(key.to_string(), input);
        }
    }

    #[test]
    fn canonical_form_parses_back_to_the_same_key() {
        for (input, ..) in VALID {
            let key: SshPublicKey = input.parse().unwrap();
            assert_eq!(SshPublicKey::parse(&key.canonical()).unwrap(), key);
        }
    }

    #[test]
    fn trims_surrounding_whitespace_and_a_trailing_newline() {
        let expected = SshPublicKey::parse(ED25519).unwrap();
        for input in [
            format!("{ED25519}\n"),
            format!("{ED25519}\r\n"),
            format!("  \t{ED25519}  \n\n"),
            format!("\n{ED25519}"),
            format!("\u{feff}{ED25519}\n"),
            format!("{ED25519}{}", " ".repeat(MAX_LEN)),
        ] {
            let key = SshPublicKey::parse(&input).unwrap();
            assert_eq!(key, expected);
            assert_eq!(key.canonical(), ED25519);
        }
    }

    #[test]
    fn normalises_whitespace_between_fields_and_inside_the_comment() {
        let data = ED25519.split_whitespace().nth(1).unwrap();
        let key =
            SshPublicKey::parse(&format!("ssh-ed25519\t {data}   my  work\tlaptop ")).unwrap();
        assert_eq!(key.comment(), Some("my work laptop"));
        assert_eq!(
            key.canonical(),
            format!("ssh-ed25519 {data} my work laptop")
        );
        assert_eq!(key.fingerprint(), ED25519_FP);
    }

    #[test]
    fn comment_is_optional_and_may_be_unicode() {
        let bare = ED25519.rsplit_once(' ').unwrap().0;
        let key = SshPublicKey::parse(bare).unwrap();
        assert_eq!(key.comment(), None);
        assert_eq!(key.canonical(), bare, "no trailing space");
        assert_eq!(key.fingerprint(), ED25519_FP);

        let key = SshPublicKey::parse(&format!("{bare} José's MacBook — büro")).unwrap();
        assert_eq!(key.comment(), Some("José's MacBook — büro"));
    }

    #[test]
    fn accepts_key_data_without_base64_padding_and_stores_it_padded() {
        assert!(ECDSA_256.contains("= "));
        let unpadded = ECDSA_256.replace("= ", " ");
        let key = SshPublicKey::parse(&unpadded).unwrap();
        assert_eq!(key.canonical(), ECDSA_256);
        assert_eq!(key.fingerprint(), ECDSA_256_FP);
    }

    #[test]
    fn accepts_rsa_from_2048_to_16384_bits_and_sane_exponents() {
        let n = rsa_2048_modulus();
        for e in [&[3u8][..], &[35], &[1, 0, 1], &[0, 0, 1, 0, 1], &[0xff; 8]] {
            let key = SshPublicKey::parse(&line("ssh-rsa", &rsa_blob(e, &n))).unwrap();
            assert_eq!(key.bits(), 2048);
        }
        let key = SshPublicKey::parse(&line("ssh-rsa", &rsa_blob(&[1, 0, 1], &odd_modulus(16384))))
            .unwrap();
        assert_eq!(key.bits(), 16384);
    }

    #[test]
    fn debug_summarises_without_the_key_data() {
        let debug = format!("{:?}", SshPublicKey::parse(ED25519).unwrap());
        assert!(debug.contains(ED25519_FP), "{debug}");
        assert!(!debug.contains("AAAAC3NzaC1lZDI1NTE5"), "{debug}");
    }

    // --- private keys --------------------------------------------------------------------

    #[test]
    fn refuses_every_kind_of_private_key_with_its_own_message() {
        for private in PRIVATE {
            assert_refused(private, SshKeyError::PrivateKey);
            assert_refused(&format!("\n  {private}  \n"), SshKeyError::PrivateKey);
            // The public key and then the private one, as `cat id_ed25519*` prints them.
            assert_refused(&format!("{ED25519}\n{private}"), SshKeyError::PrivateKey);
            // Newlines lost on the way into a JSON string.
            assert_refused(&private.replace('\n', " "), SshKeyError::PrivateKey);
        }
    }

    #[test]
    fn refuses_partial_and_unarmoured_private_keys() {
        // The OpenSSH private body without its BEGIN/END lines.
        let body: String = PRIVATE_OPENSSH_ED25519
            .lines()
            .filter(|l| !l.starts_with("-----"))
            .collect();
        assert_refused(&body, SshKeyError::PrivateKey);
        // Only the tail of a PEM file; an armour line that lost its dashes.
        assert_refused("-----END RSA PRIVATE KEY-----", SshKeyError::PrivateKey);
        assert_refused("BEGIN EC PRIVATE KEY", SshKeyError::PrivateKey);
        // Formats no fixture covers: PKCS#8 encrypted, ssh.com, PuTTY private fields alone.
        for input in [
            "-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIFHzBJBgkqhkiG9w0BBQ0wPDAbBgkqhkiG9w0BBQww\n",
            "---- BEGIN SSH2 ENCRYPTED PRIVATE KEY ----\nP2/56wAAA+gAAAA3aWYtbW9kbnthbmNvZGVd\n",
            "Private-Lines: 1\nAAAAIOABNtvGPRwCYkZLCoXMIslyujo9ahPNAgBywEnmbId7",
            "PuTTY-User-Key-File-2: ssh-rsa",
        ] {
            assert_refused(input, SshKeyError::PrivateKey);
        }
    }

    #[test]
    fn a_comment_mentioning_private_keys_is_not_mistaken_for_one() {
        let (key, _) = ED25519.rsplit_once(' ').unwrap();
        for comment in [
            "weekend private key backup",
            "friend's PRIVATE KEY",
            "private-mac: laptop",
        ] {
            let parsed = SshPublicKey::parse(&format!("{key} {comment}")).unwrap();
            assert_eq!(parsed.comment(), Some(comment));
        }
    }

    #[test]
    fn private_key_message_says_never_share_and_paste_the_pub_file() {
        let message = SshKeyError::PrivateKey.to_string();
        for needle in [
            "is a private key",
            "must never be shared",
            "public key",
            ".pub file",
            "~/.ssh/id_ed25519.pub",
        ] {
            assert!(message.contains(needle), "missing `{needle}`: {message}");
        }
    }

    #[test]
    fn private_key_is_reported_before_any_other_problem() {
        let huge = format!("{PRIVATE_PEM_RSA}{}", "A".repeat(MAX_LEN));
        assert_refused(&huge, SshKeyError::PrivateKey);
        assert_refused(
            &format!("{PUBLIC_SSH2}{PRIVATE_PEM_EC}"),
            SshKeyError::PrivateKey,
        );
    }

    // --- other formats and mistakes ------------------------------------------------------

    #[test]
    fn refuses_empty_input() {
        for input in ["", " ", "\n", " \t\r\n ", "\u{feff}"] {
            assert_refused(input, SshKeyError::Empty);
        }
        assert_eq!(
            SshKeyError::Empty.to_string(),
            "public_key must not be empty"
        );
    }

    #[test]
    fn refuses_more_than_one_line() {
        assert_refused(
            &format!("{ED25519}\n{RSA_2048}\n"),
            SshKeyError::MultipleLines { lines: 2 },
        );
        assert_refused(
            &format!("{ED25519}\n\n{RSA_2048}\r\n\r\n{ECDSA_256}"),
            SshKeyError::MultipleLines { lines: 3 },
        );
        // The same key twice is still two lines.
        assert_refused(
            &format!("{ED25519}\r\n{ED25519}"),
            SshKeyError::MultipleLines { lines: 2 },
        );
        assert_refused(
            &format!("{ED25519}\r{ED25519}"),
            SshKeyError::MultipleLines { lines: 2 },
        );
        assert_refused(
            &format!("{ED25519}\u{2028}{ED25519}"),
            SshKeyError::MultipleLines { lines: 2 },
        );
        // One key wrapped by an editor.
        let (head, tail) = RSA_2048.split_at(70);
        assert_refused(
            &format!("{head}\n{tail}"),
            SshKeyError::MultipleLines { lines: 2 },
        );
    }

    #[test]
    fn refuses_options_or_host_before_the_key_type() {
        let data = ED25519.split_whitespace().nth(1).unwrap();
        for prefix in [
            r#"from="10.0.0.1,192.168.0.0/16""#,
            r#"command="echo hello world""#,
            r#"environment="PATH=/bin""#,
            "no-pty,no-port-forwarding",
            "restrict",
            "no-agent-forwarding",
            "github.com,140.82.121.4",
            "[gpu.example.com]:2222",
        ] {
            assert_refused(
                &format!("{prefix} ssh-ed25519 {data} alice"),
                SshKeyError::OptionsBeforeKey,
            );
        }
        let message = SshKeyError::OptionsBeforeKey.to_string();
        assert!(message.contains("paste just the public key"), "{message}");
    }

    #[test]
    fn refuses_ssh2_format_with_the_conversion_command() {
        assert_refused(PUBLIC_SSH2, SshKeyError::Ssh2Format);
        let header_only = PUBLIC_SSH2.lines().next().unwrap();
        assert_refused(header_only, SshKeyError::Ssh2Format);
        assert!(SshKeyError::Ssh2Format
            .to_string()
            .contains("ssh-keygen -i -f"));
        assert!(SshKeyError::Ssh2Format
            .to_string()
            .contains("OpenSSH format"));
    }

    #[test]
    fn refuses_pem_public_keys_with_the_conversion_command() {
        assert_refused(PUBLIC_PEM, SshKeyError::PemPublicKey);
        assert_refused(
            "-----BEGIN RSA PUBLIC KEY-----\nMIGJAoGBAMD0x7RmtdpxNCgDRy3spBF8\n-----END RSA PUBLIC KEY-----",
            SshKeyError::PemPublicKey,
        );
        assert!(SshKeyError::PemPublicKey
            .to_string()
            .contains("ssh-keygen -i -m PKCS8 -f"));
    }

    #[test]
    fn refuses_dsa_as_insecure() {
        assert_refused(DSA, SshKeyError::Dsa);
        let message = SshKeyError::Dsa.to_string();
        assert!(
            message.contains("ssh-dss") && message.contains("insecure"),
            "{message}"
        );
    }

    #[test]
    fn refuses_rsa_below_2048_bits_naming_the_size() {
        assert_refused(RSA_1024, SshKeyError::RsaTooSmall { bits: 1024 });
        assert!(SshKeyError::RsaTooSmall { bits: 1024 }
            .to_string()
            .contains("1024-bit"));
        let n = odd_modulus(2047);
        assert_refused(
            &line("ssh-rsa", &rsa_blob(&[1, 0, 1], &n)),
            SshKeyError::RsaTooSmall { bits: 2047 },
        );
    }

    #[test]
    fn refuses_rsa_above_16384_bits() {
        let n = odd_modulus(16392);
        assert_refused(
            &line("ssh-rsa", &rsa_blob(&[1, 0, 1], &n)),
            SshKeyError::RsaTooLarge { bits: 16392 },
        );
    }

    #[test]
    fn refuses_unknown_types_listing_the_supported_ones() {
        let data = ED25519.split_whitespace().nth(1).unwrap();
        for input in [
            format!("ecdsa-sha2-nistp192 {data}"),
            format!("sk-ssh-ed25519@openssh.com {data}"),
            format!("ssh-ed25519-cert-v01@openssh.com {data}"),
            format!("rsa-sha2-256 {data}"),
            format!("SSH-ED25519 {data}"),
            format!("ssh-ed25519{data}"),
            data.to_string(),
            "hello world".to_string(),
        ] {
            assert_refused(&input, SshKeyError::UnsupportedType);
        }
        let message = SshKeyError::UnsupportedType.to_string();
        for algorithm in SUPPORTED_ALGORITHMS {
            assert!(
                message.contains(algorithm),
                "missing {algorithm}: {message}"
            );
        }
    }

    #[test]
    fn refuses_a_type_without_key_data() {
        assert_refused("ssh-ed25519", SshKeyError::MissingKeyData);
        assert_refused("ssh-rsa   \n", SshKeyError::MissingKeyData);
    }

    #[test]
    fn refuses_bad_base64() {
        for data in [
            "AAAAC3NzaC1lZDI1NTE5!!!!",
            "AAAAC3NzaC1lZDI1NTE5AAAAID3C6VXIVgP1ZyyB-tilX36I9ZsZUQL5ocy7Rf_Z_Hge",
            "AAAAC3NzaC1lZDI1NTE5AAAAID3C6VXIVgP1ZyyB+tilX36I9ZsZUQL5ocy7Rf+Z/Hge=",
            // Non-zero bits past the last byte; one character too many.
            "AAAAC3NzaC1lZDI1NTE5AAAAID3C6VXIVgP1ZyyB+tilX36I9ZsZUQL5ocy7Rf+Z/Hh",
            "AAAAC3NzaC1lZDI1NTE5AAAAID3C6VXIVgP1ZyyB+tilX36I9ZsZUQL5ocy7Rf+Z/HgeA",
            "…",
        ] {
            assert_refused(&format!("ssh-ed25519 {data} x"), SshKeyError::InvalidBase64);
        }
        assert!(SshKeyError::InvalidBase64
            .to_string()
            .contains("not valid base64"));
    }

    #[test]
    fn refuses_input_over_16_kib() {
        let (key, _) = ED25519.rsplit_once(' ').unwrap();
        let at_limit = format!("{key} {}", "c".repeat(MAX_LEN - key.len() - 1));
        assert_eq!(at_limit.len(), MAX_LEN);
        assert!(SshPublicKey::parse(&at_limit).is_ok());
        let over = format!("{at_limit}c");
        assert_refused(&over, SshKeyError::TooLong { bytes: MAX_LEN + 1 });
        let huge = "A".repeat(1 << 20);
        assert_refused(&huge, SshKeyError::TooLong { bytes: 1 << 20 });
    }

    #[test]
    fn refuses_control_characters() {
        assert_refused(
            &format!("{ED25519}\u{1b}[31m red"),
            SshKeyError::ControlCharacters,
        );
        assert_refused(&format!("{ED25519} a\0b"), SshKeyError::ControlCharacters);
    }

    // --- the key data --------------------------------------------------------------------

    #[test]
    fn refuses_a_type_that_does_not_match_the_key_data() {
        let cases = [
            (
                line("ssh-rsa", &blob_of(ED25519)),
                "ssh-rsa",
                Some("ssh-ed25519"),
            ),
            (
                line("ssh-ed25519", &blob_of(RSA_2048)),
                "ssh-ed25519",
                Some("ssh-rsa"),
            ),
            (
                line("ecdsa-sha2-nistp256", &blob_of(ECDSA_384)),
                "ecdsa-sha2-nistp256",
                Some("ecdsa-sha2-nistp384"),
            ),
            (line("ssh-rsa", &blob_of(DSA)), "ssh-rsa", Some("ssh-dss")),
        ];
        for (input, declared, actual) in cases {
            assert_refused(&input, SshKeyError::AlgorithmMismatch { declared, actual });
        }
        let message = SshKeyError::AlgorithmMismatch {
            declared: "ssh-rsa",
            actual: Some("ssh-ed25519"),
        }
        .to_string();
        assert!(
            message.starts_with(
                "public_key starts with ssh-rsa but its key data is an ssh-ed25519 key;"
            ),
            "{message}"
        );

        // An unknown name inside is not echoed.
        let blob = [string(b"hunter2-secret-name"), string(&[7; 32])].concat();
        let err = SshPublicKey::parse(&line("ssh-ed25519", &blob)).unwrap_err();
        assert_eq!(
            err,
            SshKeyError::AlgorithmMismatch {
                declared: "ssh-ed25519",
                actual: None
            }
        );
        assert!(!err.to_string().contains("hunter2"));
        assert!(err.to_string().contains("not an ssh-ed25519 key"));
    }

    #[test]
    fn refuses_ed25519_keys_that_are_not_32_bytes() {
        for len in [0, 31, 33, 64] {
            let blob = [string(b"ssh-ed25519"), string(&vec![7; len])].concat();
            assert_refused(
                &line("ssh-ed25519", &blob),
                KeyDataProblem::Ed25519Length.into(),
            );
        }
        // ssh-key reads the first 32 bytes of a longer string, and takes any declared length
        // of 32 or more if 32 bytes follow: the re-encoding check catches both.
        let mut blob = blob_of(ED25519);
        blob[15..19].copy_from_slice(&64u32.to_be_bytes());
        assert!(
            KeyData::decode(&mut &blob[..]).is_ok(),
            "ssh-key alone takes it"
        );
        assert_refused(
            &line("ssh-ed25519", &blob),
            KeyDataProblem::Ed25519Length.into(),
        );
    }

    #[test]
    fn refuses_ecdsa_with_the_wrong_curve_or_point() {
        let point = ec_point(ECDSA_256);
        let alg = "ecdsa-sha2-nistp256";
        assert!(SshPublicKey::parse(&line(alg, &ecdsa_blob(alg, "nistp256", &point))).is_ok());

        assert_refused(
            &line(alg, &ecdsa_blob(alg, "nistp384", &point)),
            KeyDataProblem::CurveMismatch.into(),
        );
        // A curve name that is none of the three.
        assert_refused(
            &line(alg, &ecdsa_blob(alg, "nistp192", &point)),
            KeyDataProblem::CurveMismatch.into(),
        );
        // A P-384 point under the P-256 name: ssh-key tells the curve by the point's size.
        assert_refused(
            &line(alg, &ecdsa_blob(alg, "nistp256", &ec_point(ECDSA_384))),
            KeyDataProblem::CurveMismatch.into(),
        );
        // Compressed form (valid to ssh-key, not to OpenSSH), wrong prefix, wrong length.
        let compressed = [&[0x02 | (point[64] & 1)][..], &point[1..33]].concat();
        assert!(p256::PublicKey::from_sec1_bytes(&compressed).is_ok());
        let mut hybrid = point.clone();
        hybrid[0] = 0x06;
        let short = &point[..64];
        for bad in [&compressed[..], &hybrid, short, &[]] {
            assert_refused(
                &line(alg, &ecdsa_blob(alg, "nistp256", bad)),
                KeyDataProblem::EcPointEncoding.into(),
            );
        }
        // Right shape, off the curve: Y changed; X replaced by p itself (out of range).
        let mut off = point.clone();
        off[64] ^= 1;
        let mut x_is_p = point.clone();
        x_is_p[1..33].copy_from_slice(&P256_P);
        for bad in [off, x_is_p, [&[4u8][..], &[0; 64]].concat()] {
            assert_refused(
                &line(alg, &ecdsa_blob(alg, "nistp256", &bad)),
                KeyDataProblem::EcPointNotOnCurve.into(),
            );
        }
    }

    #[test]
    fn refuses_insane_rsa_numbers() {
        let n = rsa_2048_modulus();
        for e in [
            &[][..],
            &[1],
            &[2],
            &[1, 0, 0],
            &[1, 0, 0, 0, 0, 0, 0, 0, 1],
        ] {
            assert_refused(
                &line("ssh-rsa", &rsa_blob(e, &n)),
                KeyDataProblem::RsaExponent.into(),
            );
        }
        let mut even = n.clone();
        *even.last_mut().unwrap() &= !1;
        for bad in [&even[..], &[]] {
            assert_refused(
                &line("ssh-rsa", &rsa_blob(&[1, 0, 1], bad)),
                KeyDataProblem::RsaModulus.into(),
            );
        }
        // The modulus without the zero byte that keeps it positive.
        let negative = [string(b"ssh-rsa"), mpint(&[1, 0, 1]), string(&n)].concat();
        assert_refused(
            &line("ssh-rsa", &negative),
            KeyDataProblem::NegativeInteger.into(),
        );
        // A redundant zero byte in front of the exponent, or the modulus (whose top bit is
        // clear once the sign byte is there).
        let padded_n = [&[0u8, 0][..], &n].concat();
        for blob in [
            [string(b"ssh-rsa"), string(&[0, 1, 0, 1]), mpint(&n)].concat(),
            [string(b"ssh-rsa"), mpint(&[1, 0, 1]), string(&padded_n)].concat(),
        ] {
            assert_refused(
                &line("ssh-rsa", &blob),
                KeyDataProblem::NonMinimalInteger.into(),
            );
        }
    }

    #[test]
    fn refuses_trailing_bytes() {
        for (input, algorithm, ..) in VALID {
            let mut blob = blob_of(input);
            blob.push(0);
            assert_refused(
                &line(algorithm, &blob),
                KeyDataProblem::TrailingBytes.into(),
            );
        }
    }

    #[test]
    fn refuses_every_truncation_of_every_key() {
        for (input, algorithm, ..) in VALID {
            let blob = blob_of(input);
            for len in 1..blob.len() {
                assert_refused(
                    &line(algorithm, &blob[..len]),
                    KeyDataProblem::Truncated.into(),
                );
            }
            // A length pointing past the end, however far (ssh-encoding refuses lengths over
            // 1 MiB with an error of its own): the type name's, and the RSA exponent's, which
            // ssh-key reads in full. (Not every field is: see the ed25519 length test.)
            let exponent = 4 + algorithm.len();
            let fields = if algorithm == "ssh-rsa" {
                &[0, exponent][..]
            } else {
                &[0]
            };
            for &at in fields {
                for len in [blob.len() as u32, 0x10_0000, u32::MAX] {
                    let mut long = blob.clone();
                    long[at..at + 4].copy_from_slice(&len.to_be_bytes());
                    assert_refused(&line(algorithm, &long), KeyDataProblem::Truncated.into());
                }
            }
            // Cut in the base64 text instead: bad base64 or short key data, never accepted.
            let text = input.split_whitespace().nth(1).unwrap();
            for len in 1..text.len() - 2 {
                let err =
                    SshPublicKey::parse(&format!("{algorithm} {}", &text[..len])).unwrap_err();
                assert!(
                    matches!(
                        err,
                        SshKeyError::InvalidBase64 | SshKeyError::InvalidKeyData(_)
                    ),
                    "{algorithm} cut at {len}: {err:?}"
                );
            }
        }
    }

    #[test]
    fn a_tampered_byte_is_refused_or_makes_a_different_key() {
        for (input, algorithm, _, _, fingerprint) in VALID {
            let blob = blob_of(input);
            // Length and name of the type, then the length of the next field.
            let header = 4 + algorithm.len() + 4;
            for i in 0..blob.len() {
                for mask in [0x01, 0x80, 0xff] {
                    let mut tampered = blob.clone();
                    tampered[i] ^= mask;
                    match SshPublicKey::parse(&line(algorithm, &tampered)) {
                        Err(_) => {}
                        Ok(key) => {
                            assert!(i >= header, "{algorithm}: byte {i} ^ {mask:#x} accepted");
                            // ECDSA: every point change leaves the curve. Ed25519 and RSA key
                            // material cannot be checked, but it is a different key.
                            assert!(
                                !algorithm.starts_with("ecdsa"),
                                "{algorithm}: byte {i} ^ {mask:#x} accepted"
                            );
                            assert_ne!(key.fingerprint(), fingerprint);
                        }
                    }
                }
            }
        }
    }

    // --- plumbing ------------------------------------------------------------------------

    #[test]
    fn becomes_a_400_naming_public_key() {
        for err in [
            SshKeyError::Empty,
            SshKeyError::PrivateKey,
            SshKeyError::RsaTooSmall { bits: 1024 },
            KeyDataProblem::Truncated.into(),
        ] {
            let message = err.to_string();
            let api: ApiError = err.into();
            assert_eq!(api.status(), StatusCode::BAD_REQUEST);
            assert_eq!(api.code(), "validation_error");
            match &api {
                ApiError::Validation { field, message: m } => {
                    assert_eq!(field, "public_key");
                    assert_eq!(m, &message);
                }
                other => panic!("{other:?}"),
            }
            assert_eq!(api.body("req")["details"]["field"], "public_key");
        }
        let api: ApiError = SshPublicKey::parse("").unwrap_err().into();
        assert_eq!(api.to_string(), "public_key must not be empty");
    }
}
