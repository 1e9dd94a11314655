//! An RSA public key between its two forms: big-endian components and DER (RFC 8017
//! `RSAPublicKey`). aws-lc-rs reads DER; jsonwebtoken's RustCrypto backend reads components.

/// DER-encodes an RFC 8017 `RSAPublicKey` from its components.
#[cfg_attr(not(feature = "aws-lc-rs"), allow(dead_code))]
pub(crate) fn rsa_public_key_der(n: &[u8], e: &[u8]) -> Vec<u8> {
    fn integer(out: &mut Vec<u8>, bytes: &[u8]) {
        let start = bytes.iter().position(|&b| b != 0).unwrap_or(bytes.len());
        let bytes = &bytes[start..];
        let pad = bytes.first().is_none_or(|&b| b & 0x80 != 0);
        out.push(0x02);
        length(out, bytes.len() + usize::from(pad));
        if pad {
            out.push(0);
        }
        out.extend_from_slice(bytes);
    }
    fn length(out: &mut Vec<u8>, len: usize) {
        if len < 0x80 {
            out.push(len as u8);
        } else {
            let bytes = len.to_be_bytes();
            let skip = bytes
                .iter()
                .position(|&b| b != 0)
                .unwrap_or(bytes.len() - 1);
            out.push(0x80 | (bytes.len() - skip) as u8);
            out.extend_from_slice(&bytes[skip..]);
        }
    }
    let mut body = Vec::with_capacity(n.len() + e.len() + 16);
    integer(&mut body, n);
    integer(&mut body, e);
    let mut out = Vec::with_capacity(body.len() + 6);
    out.push(0x30);
    length(&mut out, body.len());
    out.extend_from_slice(&body);
    out
}

/// The modulus and exponent of a DER `RSAPublicKey` (RFC 8017), the form jsonwebtoken reads
/// RSA PEM files into.
#[cfg_attr(feature = "aws-lc-rs", allow(dead_code))]
pub(crate) fn rsa_public_key_components(der: &[u8]) -> Option<(&[u8], &[u8])> {
    /// One tag-length-value: its tag, its contents, and what follows it.
    fn tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
        let (&tag, rest) = input.split_first()?;
        let (&first, rest) = rest.split_first()?;
        let (len, rest) = if first < 0x80 {
            (usize::from(first), rest)
        } else {
            let count = usize::from(first & 0x7f);
            if count == 0 || count > 4 || rest.len() < count {
                return None;
            }
            let len = rest[..count]
                .iter()
                .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
            (len, &rest[count..])
        };
        (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
    }
    let (0x30, body, []) = tlv(der)? else {
        return None;
    };
    let (0x02, n, rest) = tlv(body)? else {
        return None;
    };
    let (0x02, e, []) = tlv(rest)? else {
        return None;
    };
    Some((n, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn der_integer_padding_and_long_lengths() {
        // 0x80 needs a leading zero; leading zeros in the input are stripped.
        let der = rsa_public_key_der(&[0, 0, 0x80], &[1, 0, 1]);
        assert_eq!(der, [0x30, 9, 0x02, 2, 0, 0x80, 0x02, 3, 1, 0, 1]);
        let n = vec![0x7f; 256];
        let der = rsa_public_key_der(&n, &[3]);
        assert_eq!(&der[..4], &[0x30, 0x82, 0x01, 0x07]);
        assert_eq!(&der[4..8], &[0x02, 0x82, 0x01, 0x00]);
    }

    #[test]
    fn rsa_public_key_components_round_trip_and_refuse_garbage() {
        let n = vec![0xc5; 256];
        let der = rsa_public_key_der(&n, &[1, 0, 1]);
        let (got_n, got_e) = rsa_public_key_components(&der).unwrap();
        assert_eq!((&got_n[1..], got_e), (&n[..], &[1, 0, 1][..]));
        let truncated = &der[..der.len() - 1];
        let huge_length = [0x30, 0x84, 0xff, 0xff, 0xff, 0xff];
        for bad in [truncated, &huge_length[..], &[][..], &[0x30][..]] {
            assert!(rsa_public_key_components(bad).is_none());
        }
    }
}
