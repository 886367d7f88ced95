//! Items grouped by agent, built in parallel and deterministically.
//!
//! Each day the simulator regroups millions of items: the windows of the
//! day's contacts by the phone that broadcasts them, so that each sender
//! derives its EphIDs once. A serial counting sort over a million agents is bound
//! by cache misses and would leave the other cores idle, so the agents are
//! split into parts of consecutive ids. Producers, running in parallel,
//! drop each item into its part's bucket; each part then gathers its
//! buckets in producer order and sorts them by agent, in parallel with the
//! other parts, over an offset table small enough to stay in cache.
//!
//! The order of an agent's items is the order they were produced in (by
//! producer, then within it), whatever the number of threads.

use rayon::prelude::*;

/// Parts the agents are split into: enough for many cores to share the
/// work, few enough that every producer's buckets stay cheap.
const PARTS: usize = 128;

/// Where items go: which part an agent belongs to.
#[derive(Clone, Copy, Debug)]
pub struct Parts {
    agents: usize,
    size: usize,
}

impl Parts {
    /// Parts for `agents` agents.
    pub fn new(agents: usize) -> Parts {
        Parts {
            agents,
            size: agents.div_ceil(PARTS).max(1),
        }
    }

    /// Number of parts.
    pub fn count(&self) -> usize {
        self.agents.div_ceil(self.size)
    }

    /// The part of `agent`.
    pub fn of(&self, agent: u32) -> usize {
        agent as usize / self.size
    }

    /// The agents of part `p`.
    pub fn agents(&self, p: usize) -> std::ops::Range<usize> {
        p * self.size..((p + 1) * self.size).min(self.agents)
    }

    /// One empty bucket per part, for a producer.
    pub fn buckets<T>(&self) -> Vec<Vec<(u32, T)>> {
        (0..self.count()).map(|_| Vec::new()).collect()
    }
}

/// One part's items, sorted by agent (CSR).
#[derive(Debug)]
struct Part<T> {
    first: usize,
    offsets: Vec<u32>,
    items: Vec<T>,
}

/// Items grouped by agent.
#[derive(Debug)]
pub struct Grouped<T> {
    parts: Parts,
    groups: Vec<Part<T>>,
}

impl<T: Copy + Default + Send + Sync> Grouped<T> {
    /// Groups what the producers made: `produced[i][p]` holds producer
    /// `i`'s items (agent, item) for part `p`, in the order it made them.
    pub fn build(parts: Parts, produced: Vec<Vec<Vec<(u32, T)>>>) -> Grouped<T> {
        let mut grouped = Grouped {
            parts,
            groups: Vec::new(),
        };
        grouped.rebuild(parts, &produced);
        grouped
    }

    /// [`Grouped::build`] in the memory of the items grouped before, which
    /// are dropped: a grouping made every day allocates nothing once its
    /// parts are as large as they need to be.
    pub fn rebuild(&mut self, parts: Parts, produced: &[Vec<Vec<(u32, T)>>]) {
        self.parts = parts;
        self.groups.resize_with(parts.count(), || Part {
            first: 0,
            offsets: Vec::new(),
            items: Vec::new(),
        });
        self.groups.truncate(parts.count());
        self.groups
            .par_iter_mut()
            .enumerate()
            .for_each(|(p, part)| {
                let range = parts.agents(p);
                let offsets = &mut part.offsets;
                offsets.clear();
                offsets.resize(range.len() + 1, 0);
                let mut total = 0;
                for buckets in produced {
                    for &(agent, _) in &buckets[p] {
                        offsets[agent as usize - range.start + 1] += 1;
                    }
                    total += buckets[p].len();
                }
                for i in 0..range.len() {
                    offsets[i + 1] += offsets[i];
                }
                let mut next = offsets.clone();
                // Every slot is written once: the offsets counted them.
                part.items.clear();
                part.items.resize(total, T::default());
                for buckets in produced {
                    for &(agent, item) in &buckets[p] {
                        let at = &mut next[agent as usize - range.start];
                        part.items[*at as usize] = item;
                        *at += 1;
                    }
                }
                part.first = range.start;
            });
    }
}

impl<T> Grouped<T> {
    /// The items of `agent`, in the order they were produced.
    pub fn of(&self, agent: usize) -> &[T] {
        let Some(part) = self.groups.get(self.parts.of(agent as u32)) else {
            return &[];
        };
        let i = agent - part.first;
        &part.items[part.offsets[i] as usize..part.offsets[i + 1] as usize]
    }

    /// Items in all.
    pub fn len(&self) -> usize {
        self.groups.iter().map(|g| g.items.len()).sum()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_by_agent_in_production_order() {
        let parts = Parts::new(1_000);
        // Three producers, each giving every agent divisible by 7 two items.
        type Buckets = Vec<Vec<(u32, (u8, u32))>>;
        let produced: Vec<Buckets> = (0..3u8)
            .map(|i| {
                let mut buckets = parts.buckets();
                for agent in (0..1_000u32).rev().filter(|a| a % 7 == 0) {
                    for k in 0..2 {
                        buckets[parts.of(agent)].push((agent, (i, agent * 10 + k)));
                    }
                }
                buckets
            })
            .collect();
        let g = Grouped::build(parts, produced);
        assert_eq!(g.len(), 3 * 2 * 143);
        for agent in 0..1_000usize {
            let items = g.of(agent);
            if agent % 7 != 0 {
                assert!(items.is_empty());
                continue;
            }
            let a = agent as u32;
            let expected: Vec<(u8, u32)> = (0..3u8)
                .flat_map(|i| [(i, a * 10), (i, a * 10 + 1)])
                .collect();
            assert_eq!(items, expected);
        }
        assert!(g.of(5_000).is_empty());

        // Regrouped in the same memory: only the new items remain.
        let mut g = g;
        let mut buckets = parts.buckets();
        buckets[parts.of(999)].push((999, (7, 1)));
        buckets[parts.of(3)].push((3, (7, 2)));
        g.rebuild(parts, &[buckets]);
        assert_eq!(g.len(), 2);
        assert_eq!(g.of(999), [(7, 1)]);
        assert_eq!(g.of(3), [(7, 2)]);
        assert!(g.of(7).is_empty());
    }
}
