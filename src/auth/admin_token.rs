//! The admin token check, shared by the admin listener and the main listener's
//! `/admin/scores` and `/admin/routes`. Pure: no IO, no runtime.

use http::HeaderMap;
use http::header::AUTHORIZATION;
use ring::digest::{SHA256, digest};
use subtle::ConstantTimeEq;

use crate::config::Secret;

/// Does `headers` carry `Authorization: Bearer <token>`?
///
/// Both sides are hashed first and the digests compared in constant time (`subtle`; ring's
/// `constant_time::verify_slices_are_equal` is deprecated in ring 0.17, "to be removed"): the
/// time taken reveals neither how much of the token a guess got right nor the token's length.
pub fn authorized(headers: &HeaderMap, token: &Secret) -> bool {
    let Some(presented) = bearer(headers) else {
        return false;
    };
    let (a, b) = (
        digest(&SHA256, presented),
        digest(&SHA256, token.expose().as_bytes()),
    );
    bool::from(a.as_ref().ct_eq(b.as_ref()))
}

/// The credentials of `Authorization: Bearer <credentials>` (scheme case-insensitive).
fn bearer(headers: &HeaderMap) -> Option<&[u8]> {
    let value = headers.get(AUTHORIZATION)?.as_bytes();
    let (scheme, rest) = value.split_at_checked(6)?;
    if !scheme.eq_ignore_ascii_case(b"bearer") || rest.first() != Some(&b' ') {
        return None;
    }
    let rest = rest.trim_ascii();
    (!rest.is_empty()).then_some(rest)
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    const TOKEN: &str = "adm-0123456789abcdef0123456789abcdef";

    fn with(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        h
    }

    #[test]
    fn only_the_exact_bearer_token_passes() {
        let token = Secret::new(TOKEN);
        assert!(authorized(&with(&format!("Bearer {TOKEN}")), &token));
        assert!(authorized(&with(&format!("bearer   {TOKEN} ")), &token));
        assert!(!authorized(&HeaderMap::new(), &token));
        for wrong in [
            format!("Bearer {}", &TOKEN[1..]),
            format!("Bearer {TOKEN}x"),
            format!("Basic {TOKEN}"),
            format!("Bearer{TOKEN}"),
            TOKEN.to_owned(),
            "Bearer ".to_owned(),
            "Bearer".to_owned(),
        ] {
            assert!(!authorized(&with(&wrong), &token), "{wrong}");
        }
    }
}
