//! Weighted random order without replacement: each next item is drawn with probability
//! `weight / (sum of the weights still in the pool)`. So the first item follows the weights
//! exactly, and every item appears once.

use rand::Rng;

/// `items` in a weighted random order. Weights below 1 count as 1 (the schema requires
/// `weight > 0`; this only keeps a bad row from dominating or vanishing).
pub fn weighted_order<T, R: Rng + ?Sized>(items: Vec<(T, i32)>, rng: &mut R) -> Vec<T> {
    let mut pool: Vec<(T, u64)> = items
        .into_iter()
        .map(|(item, weight)| (item, u64::try_from(weight.max(1)).unwrap_or(1)))
        .collect();
    let mut ordered = Vec::with_capacity(pool.len());
    while !pool.is_empty() {
        let total: u64 = pool.iter().map(|(_, weight)| weight).sum();
        let mut ticket = rng.random_range(0..total);
        let mut chosen = pool.len() - 1;
        for (index, (_, weight)) in pool.iter().enumerate() {
            if ticket < *weight {
                chosen = index;
                break;
            }
            ticket -= weight;
        }
        ordered.push(pool.remove(chosen).0);
    }
    ordered
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    use super::*;

    #[test]
    fn every_item_once_and_first_follows_weights() {
        let mut rng = StdRng::seed_from_u64(7);
        let mut first = [0u32; 3];
        for _ in 0..20_000 {
            let order = weighted_order(vec![(0usize, 1), (1, 3), (2, 6)], &mut rng);
            let mut sorted = order.clone();
            sorted.sort_unstable();
            assert_eq!(sorted, vec![0, 1, 2]);
            first[order[0]] += 1;
        }
        let shares: Vec<f64> = first.iter().map(|&n| f64::from(n) / 20_000.0).collect();
        for (share, expected) in shares.iter().zip([0.1, 0.3, 0.6]) {
            assert!((share - expected).abs() < 0.02, "{shares:?}");
        }
    }

    #[test]
    fn empty_and_single() {
        let mut rng = StdRng::seed_from_u64(1);
        assert!(weighted_order::<u8, _>(vec![], &mut rng).is_empty());
        assert_eq!(weighted_order(vec![("a", 0)], &mut rng), vec!["a"]);
    }
}
