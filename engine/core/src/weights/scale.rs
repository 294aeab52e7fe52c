//! Scaling effective weights into each DNS backend's weight range.
//!
//! This module owns the arithmetic that turns the integer weights of a
//! domain's answers (0..=1000 from [`super::compute`]) into the values a DNS
//! backend accepts, and the rounding rule behind it. It must not decide which
//! nodes are answers or what their weights are; that is [`super`]'s job. All
//! functions are pure, total and exact: integer and rational arithmetic only,
//! no floating point.
//!
//! # Rounding rule
//!
//! [`apportion`] scales a list of weights so that the largest maps to
//! `target_max`, with the largest-remainder (Hamilton) method:
//!
//! 1. Let `m = max(w)`. When `m = 0` or `target_max = 0`, every result is 0.
//! 2. Each weight's quota is the exact rational `q_i = w_i · target_max / m`.
//! 3. The total to hand out is `T = round(Σ q_i)`, rounding half up (half away
//!    from zero; the quotas are never negative), computed as
//!    `(2·Σ(w_i·target_max) + m) / (2·m)` in integers.
//! 4. Every weight first gets `floor(q_i)`; the `T − Σ floor(q_i)` units left
//!    go one each to the largest fractional remainders `q_i − floor(q_i)`, ties
//!    to the larger original weight, then to the lower index.
//!
//! Consequences, checked by the tests:
//! - the result sums to exactly `T`;
//! - the largest weights map to exactly `target_max`, and nothing exceeds it;
//! - zero stays zero, and all-zero input stays all-zero;
//! - order is kept: `w_i < w_j ⇒ r_i ≤ r_j`. Equal weights get results that
//!   differ by at most 1, the extra unit going to the lower index: an exact
//!   sum and identical results for equal weights cannot both hold (`[1, 1, 1,
//!   3]` to 4 has quotas `4/3, 4/3, 4/3, 4` and `T = 8`), and the exact sum
//!   wins. Weights equal to the maximum always map to exactly `target_max`.
//!
//! Per backend ([`render_weights`]):
//! - **embedded**: the weights as they are (weighted random per query);
//! - **PowerDNS**: `pickwrandom` takes any integer weights: the weights
//!   divided by their greatest common divisor (ratios exact, numbers small);
//!   a plain `A`/`AAAA` RRset is used instead when [`weights_are_equal`];
//! - **Route53**: 0..=255, [`apportion`] to 255. A small positive weight may
//!   round to 0, which Route53 reads as "no traffic while others have weight";
//! - **AliDNS**: 1..=100 with 0 meaning "record disabled": [`apportion`] to
//!   100, then every positive weight that rounded to 0 is raised to 1. The sum
//!   then exceeds `T` by exactly the number of raised weights;
//! - **Cloudflare**: no weights, a record is on or off: 1 when the weight is
//!   positive, else 0.

use crate::model::DnsBackendKind;

/// The largest weight Route53 accepts on a weighted record set.
pub const ROUTE53_MAX_WEIGHT: u32 = 255;
/// The largest weight AliDNS accepts on a weighted record; 0 disables it.
pub const ALIDNS_MAX_WEIGHT: u32 = 100;

/// `numerator / denominator` rounded half up (half away from zero for the
/// non-negative values used here); 0 when `denominator` is 0.
pub(crate) fn div_round_half_up(numerator: u128, denominator: u128) -> u128 {
    if denominator == 0 {
        return 0;
    }
    numerator
        .saturating_mul(2)
        .saturating_add(denominator)
        .checked_div(denominator.saturating_mul(2))
        .unwrap_or(0)
}

/// Scales `weights` so the largest maps to `target_max`, keeping ratios, by
/// the largest-remainder method described in the [module docs](self).
pub fn apportion(weights: &[u32], target_max: u32) -> Vec<u32> {
    let max = weights.iter().copied().max().unwrap_or(0);
    if max == 0 || target_max == 0 {
        return vec![0; weights.len()];
    }
    let max = u128::from(max);
    let target = u128::from(target_max);
    let numerators: Vec<u128> = weights.iter().map(|&w| u128::from(w) * target).collect();
    let total = div_round_half_up(
        numerators
            .iter()
            .fold(0u128, |acc, &n| acc.saturating_add(n)),
        max,
    );
    // floor(q_i) <= target_max because w_i <= max, so it fits in u32.
    let mut result: Vec<u32> = numerators
        .iter()
        .map(|&n| u32::try_from(n / max).unwrap_or(target_max))
        .collect();
    let handed_out = result
        .iter()
        .fold(0u128, |acc, &r| acc.saturating_add(u128::from(r)));
    let mut left = total.saturating_sub(handed_out);

    let mut by_remainder: Vec<(usize, u32, u128)> = weights
        .iter()
        .zip(&numerators)
        .enumerate()
        .map(|(index, (&weight, &n))| (index, weight, n % max))
        .collect();
    by_remainder.sort_by(|a, b| b.2.cmp(&a.2).then(b.1.cmp(&a.1)).then(a.0.cmp(&b.0)));
    for (index, _, remainder) in by_remainder {
        if left == 0 || remainder == 0 {
            break;
        }
        if let Some(r) = result.get_mut(index) {
            // A positive remainder means w_i < max, so floor(q_i) < target_max.
            *r = r.saturating_add(1);
            left -= 1;
        }
    }
    result
}

/// The greatest common divisor; `gcd(0, x) = x`.
fn gcd(mut a: u32, mut b: u32) -> u32 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// The weights as `kind` takes them; see the [module docs](self) for the rule
/// of each backend. The output has one entry per input, in the same order.
pub fn render_weights(kind: DnsBackendKind, weights: &[u32]) -> Vec<u32> {
    match kind {
        DnsBackendKind::Embedded => weights.to_vec(),
        DnsBackendKind::Powerdns => {
            let divisor = weights.iter().copied().fold(0, gcd);
            if divisor == 0 {
                weights.to_vec()
            } else {
                weights.iter().map(|&w| w / divisor).collect()
            }
        }
        DnsBackendKind::Route53 => apportion(weights, ROUTE53_MAX_WEIGHT),
        DnsBackendKind::Alidns => apportion(weights, ALIDNS_MAX_WEIGHT)
            .into_iter()
            .zip(weights)
            .map(|(scaled, &original)| if original > 0 { scaled.max(1) } else { 0 })
            .collect(),
        DnsBackendKind::Cloudflare => weights.iter().map(|&w| u32::from(w > 0)).collect(),
    }
}

/// The largest weight `kind` accepts, or `None` when it takes any `u32`.
pub fn max_weight(kind: DnsBackendKind) -> Option<u32> {
    match kind {
        DnsBackendKind::Embedded | DnsBackendKind::Powerdns => None,
        DnsBackendKind::Route53 => Some(ROUTE53_MAX_WEIGHT),
        DnsBackendKind::Alidns => Some(ALIDNS_MAX_WEIGHT),
        DnsBackendKind::Cloudflare => Some(1),
    }
}

/// Whether every positive weight is the same, so a plain RRset of the
/// positive-weight answers serves the same distribution as a weighted one.
/// Zeros are ignored (they are not answers); true when nothing is positive.
pub fn weights_are_equal(weights: &[u32]) -> bool {
    let mut positive = weights.iter().copied().filter(|&w| w > 0);
    match positive.next() {
        None => true,
        Some(first) => positive.all(|w| w == first),
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn rounding_is_half_up_on_exact_integers() {
        assert_eq!(div_round_half_up(5, 2), 3);
        assert_eq!(div_round_half_up(7, 3), 2);
        assert_eq!(div_round_half_up(8, 3), 3);
        assert_eq!(div_round_half_up(1, 0), 0);
    }

    #[test]
    fn apportion_maps_the_largest_weight_to_the_target_and_keeps_ratios() {
        assert_eq!(apportion(&[100, 50], 255), vec![255, 128]);
        assert_eq!(apportion(&[1000, 500, 250], 100), vec![100, 50, 25]);
        assert_eq!(apportion(&[3, 3], 255), vec![255, 255]);
    }

    #[test]
    fn apportion_hands_leftover_units_to_the_largest_remainders() {
        // Quotas 255, 85.17, 84.15, 0.51: T = round(424.83) = 425, floors sum
        // 424, the one unit left goes to the largest remainder 0.51 (weight 1).
        assert_eq!(apportion(&[500, 167, 165, 1], 255), vec![255, 85, 84, 1]);
        // Quotas 5, 1.5, 3.5: T = 10, floors 9; the remainders tie at 0.5 and
        // the unit goes to the larger original weight.
        assert_eq!(apportion(&[10, 3, 7], 5), vec![5, 1, 4]);
    }

    #[test]
    fn apportion_breaks_ties_between_equal_weights_by_lower_index() {
        // Quotas 4/3 three times and 4: T = 8, floors 7, one unit to index 0.
        assert_eq!(apportion(&[1, 1, 1, 3], 4), vec![2, 1, 1, 4]);
    }

    #[test]
    fn apportion_keeps_zero_and_all_zero() {
        assert_eq!(apportion(&[0, 10, 0], 255), vec![0, 255, 0]);
        assert_eq!(apportion(&[0, 0], 255), vec![0, 0]);
        assert_eq!(apportion(&[7, 3], 0), vec![0, 0]);
        assert_eq!(apportion(&[], 255), Vec::<u32>::new());
    }

    #[test]
    fn route53_scales_to_255() {
        assert_eq!(
            render_weights(DnsBackendKind::Route53, &[100, 50, 0]),
            vec![255, 128, 0]
        );
    }

    #[test]
    fn alidns_raises_positive_weights_that_round_to_zero_to_one() {
        // 1 of 1000 is 0.1 of 100: rounds to 0, raised to 1; 0 stays disabled.
        assert_eq!(
            render_weights(DnsBackendKind::Alidns, &[1000, 1, 0]),
            vec![100, 1, 0]
        );
    }

    #[test]
    fn powerdns_divides_by_the_greatest_common_divisor() {
        assert_eq!(
            render_weights(DnsBackendKind::Powerdns, &[100, 50, 0, 150]),
            vec![2, 1, 0, 3]
        );
        assert_eq!(
            render_weights(DnsBackendKind::Powerdns, &[0, 0]),
            vec![0, 0]
        );
    }

    #[test]
    fn cloudflare_is_on_or_off_and_embedded_keeps_weights() {
        assert_eq!(
            render_weights(DnsBackendKind::Cloudflare, &[100, 0, 3]),
            vec![1, 0, 1]
        );
        assert_eq!(
            render_weights(DnsBackendKind::Embedded, &[100, 0, 3]),
            vec![100, 0, 3]
        );
    }

    #[test]
    fn equal_positive_weights_ignore_zeros() {
        assert!(weights_are_equal(&[50, 0, 50]));
        assert!(weights_are_equal(&[]));
        assert!(!weights_are_equal(&[50, 49]));
    }

    fn sum(values: &[u32]) -> u64 {
        values.iter().map(|&v| u64::from(v)).sum()
    }

    /// `T = round(Σ w_i·target / max)` computed independently of `apportion`.
    fn expected_total(weights: &[u32], target: u32) -> u64 {
        let max = u64::from(weights.iter().copied().max().unwrap_or(0));
        if max == 0 {
            return 0;
        }
        let numerator: u64 = weights
            .iter()
            .map(|&w| u64::from(w) * u64::from(target))
            .sum();
        (2 * numerator + max) / (2 * max)
    }

    fn assert_order_kept(weights: &[u32], result: &[u32]) {
        for (i, (&wi, &ri)) in weights.iter().zip(result).enumerate() {
            for (j, (&wj, &rj)) in weights.iter().zip(result).enumerate() {
                if wi < wj {
                    assert!(ri <= rj, "w[{i}]={wi} < w[{j}]={wj} but r {ri} > {rj}");
                }
                if wi == wj {
                    assert!(ri.abs_diff(rj) <= 1, "equal weights {wi} got {ri} and {rj}");
                }
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn apportion_keeps_order_max_and_exact_total(
            weights in prop::collection::vec(0u32..=1000, 0..12),
            target in 0u32..=300,
        ) {
            let result = apportion(&weights, target);
            prop_assert_eq!(result.len(), weights.len());
            assert_order_kept(&weights, &result);
            prop_assert_eq!(sum(&result), expected_total(&weights, target));
            let max_in = weights.iter().copied().max().unwrap_or(0);
            let max_out = result.iter().copied().max().unwrap_or(0);
            prop_assert_eq!(max_out, if max_in == 0 { 0 } else { target });
            for (w, r) in weights.iter().zip(&result) {
                if *w == 0 {
                    prop_assert_eq!(*r, 0);
                }
                if *w == max_in {
                    prop_assert_eq!(*r, if max_in == 0 { 0 } else { target });
                }
            }
        }

        #[test]
        fn apportion_never_panics_on_extreme_weights(
            weights in prop::collection::vec(any::<u32>(), 0..8),
            target in any::<u32>(),
        ) {
            let result = apportion(&weights, target);
            prop_assert_eq!(result.len(), weights.len());
            prop_assert!(result.iter().all(|&r| r <= target));
        }

        #[test]
        fn rendered_weights_stay_in_range_and_keep_order(
            weights in prop::collection::vec(0u32..=1000, 0..12),
        ) {
            for kind in DnsBackendKind::ALL {
                let rendered = render_weights(kind, &weights);
                prop_assert_eq!(rendered.len(), weights.len());
                assert_order_kept(&weights, &rendered);
                if let Some(max) = max_weight(kind) {
                    prop_assert!(rendered.iter().all(|&r| r <= max));
                }
                for (w, r) in weights.iter().zip(&rendered) {
                    // Zero stays zero everywhere.
                    if *w == 0 {
                        prop_assert_eq!(*r, 0);
                    }
                    // Only Route53 may turn a positive weight into 0.
                    if *w > 0 && kind != DnsBackendKind::Route53 {
                        prop_assert!(*r > 0);
                    }
                }
                let total = expected_total(&weights, max_weight(kind).unwrap_or(0));
                match kind {
                    DnsBackendKind::Route53 => prop_assert_eq!(sum(&rendered), total),
                    DnsBackendKind::Alidns => {
                        let raised = apportion(&weights, ALIDNS_MAX_WEIGHT)
                            .iter()
                            .zip(&weights)
                            .filter(|&(&r, &w)| r == 0 && w > 0)
                            .count() as u64;
                        prop_assert_eq!(sum(&rendered), total + raised);
                    }
                    DnsBackendKind::Powerdns => {
                        // Exact ratios: one common factor maps back to the input.
                        let factor = weights.iter().zip(&rendered).find(|(_, r)| **r > 0)
                            .map_or(1, |(w, r)| w / r);
                        for (w, r) in weights.iter().zip(&rendered) {
                            prop_assert_eq!(r * factor, *w);
                        }
                    }
                    DnsBackendKind::Embedded => prop_assert_eq!(&rendered, &weights),
                    DnsBackendKind::Cloudflare => {}
                }
                if weights_are_equal(&weights) {
                    prop_assert!(weights_are_equal(&rendered));
                }
            }
        }
    }
}
