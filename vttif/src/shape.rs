//! The known application topologies (thesis §9, Patterns): their edge sets, and the
//! classifier that names a recovered topology when it is one of them.
//!
//! Nodes are `0..n`; an edge is an unordered pair `(a, b)` with `a < b`. A [`KnownShape`] with its
//! size gives the edge set ([`KnownShape::edges`]); [`classify`] tries every known shape of the
//! same node count and answers all that are isomorphic to the graph, most specific name
//! first (several names can fit: a 4-ring is also a 2-D hypercube and a 2×2 mesh).

use std::collections::BTreeSet;
use std::fmt;

/// Largest graph the classifier looks at.
const MAX_CLASSIFY_NODES: usize = 128;
/// Search steps the isomorphism test may take per candidate before giving up.
const ISO_BUDGET: u64 = 200_000;

/// A known application topology with its size (not the host-graph shape of
/// `lang::generate::Shape`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KnownShape {
    /// Every node with every other node.
    AllToAll(usize),
    /// One centre, every other node with it.
    Star(usize),
    /// A chain `0-1-...-(n-1)`.
    Bus(usize),
    /// A chain closed into a cycle.
    Ring(usize),
    /// A `d`-dimensional hypercube (2^d nodes).
    Hypercube(u32),
    /// A binary tree in heap layout: node `i`'s children are `2i+1` and `2i+2`.
    Tree(usize),
    /// A grid with these extents (row-major numbering).
    Mesh(Vec<usize>),
    /// A grid with wrap-around in every dimension.
    Torus(Vec<usize>),
}

/// Why a shape description is not one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShapeError {
    /// The name is not a known shape.
    #[error(
        "unknown topology `{0}` (bus, ring, mesh:AxB..., torus:AxB..., hypercube, tree, all-to-all, star)"
    )]
    Unknown(String),
    /// The shape cannot have this many nodes.
    #[error("{shape} cannot span {nodes} nodes: {why}")]
    Size {
        /// The shape as written.
        shape: String,
        /// The node count asked for.
        nodes: usize,
        /// What would fit.
        why: String,
    },
}

impl fmt::Display for KnownShape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let dims = |d: &[usize]| d.iter().map(ToString::to_string).collect::<Vec<_>>().join("x");
        match self {
            KnownShape::AllToAll(_) => f.write_str("all-to-all"),
            KnownShape::Star(_) => f.write_str("star"),
            KnownShape::Bus(_) => f.write_str("bus"),
            KnownShape::Ring(_) => f.write_str("ring"),
            KnownShape::Hypercube(d) => write!(f, "hypercube {d}-D"),
            KnownShape::Tree(_) => f.write_str("binary tree"),
            KnownShape::Mesh(d) => write!(f, "mesh {}", dims(d)),
            KnownShape::Torus(d) => write!(f, "torus {}", dims(d)),
        }
    }
}

impl KnownShape {
    /// Parses `bus|chain`, `ring`, `mesh:AxB...`, `torus:AxB...`, `hypercube`, `tree`,
    /// `all-to-all`, `star` for `n` nodes; mesh and torus extents must multiply to `n`
    /// (they are kept largest first), a hypercube needs a power of two.
    pub fn parse(text: &str, n: usize) -> Result<KnownShape, ShapeError> {
        let size = |why: &str| ShapeError::Size {
            shape: text.to_string(),
            nodes: n,
            why: why.to_string(),
        };
        if n < 2 {
            return Err(size("every topology needs at least 2 nodes"));
        }
        let (name, arg) = text.split_once(':').unwrap_or((text, ""));
        let dims = || -> Result<Vec<usize>, ShapeError> {
            let d: Vec<usize> = arg
                .split('x')
                .map(|p| p.trim().parse::<usize>().ok().filter(|v| *v >= 2))
                .collect::<Option<_>>()
                .ok_or_else(|| size("extents are numbers >= 2, like mesh:2x4"))?;
            if d.iter().product::<usize>() != n {
                return Err(size("the extents must multiply to the node count"));
            }
            // One name per grid: extents largest first, as the classifier reports them.
            let mut d = d;
            d.sort_unstable_by(|a, b| b.cmp(a));
            Ok(d)
        };
        Ok(match name {
            "all-to-all" | "alltoall" | "complete" => KnownShape::AllToAll(n),
            "star" => KnownShape::Star(n),
            "bus" | "chain" => KnownShape::Bus(n),
            "ring" => KnownShape::Ring(n),
            "tree" | "binary-tree" => KnownShape::Tree(n),
            "hypercube" if n.is_power_of_two() => KnownShape::Hypercube(n.trailing_zeros()),
            "hypercube" => return Err(size("a hypercube has a power of two nodes")),
            "mesh" => KnownShape::Mesh(dims()?),
            "torus" => KnownShape::Torus(dims()?),
            _ => return Err(ShapeError::Unknown(text.to_string())),
        })
    }

    /// Node count.
    pub fn nodes(&self) -> usize {
        match self {
            KnownShape::AllToAll(n)
            | KnownShape::Star(n)
            | KnownShape::Bus(n)
            | KnownShape::Ring(n)
            | KnownShape::Tree(n) => *n,
            KnownShape::Hypercube(d) => 1 << d,
            KnownShape::Mesh(d) | KnownShape::Torus(d) => d.iter().product(),
        }
    }

    /// The edge set, each edge `(a, b)` with `a < b`, sorted.
    pub fn edges(&self) -> Vec<(usize, usize)> {
        let n = self.nodes();
        let mut e = BTreeSet::new();
        let mut add = |a: usize, b: usize| {
            if a != b {
                e.insert((a.min(b), a.max(b)));
            }
        };
        match self {
            KnownShape::AllToAll(_) => (0..n).for_each(|a| (a + 1..n).for_each(|b| add(a, b))),
            KnownShape::Star(_) => (1..n).for_each(|b| add(0, b)),
            KnownShape::Bus(_) => (1..n).for_each(|b| add(b - 1, b)),
            KnownShape::Ring(_) => (0..n).for_each(|a| add(a, (a + 1) % n)),
            KnownShape::Hypercube(d) => (0..n).for_each(|a| (0..*d).for_each(|i| add(a, a ^ (1 << i)))),
            KnownShape::Tree(_) => (1..n).for_each(|b| add((b - 1) / 2, b)),
            KnownShape::Mesh(dims) | KnownShape::Torus(dims) => {
                let wrap = matches!(self, KnownShape::Torus(_));
                for a in 0..n {
                    let mut stride = 1;
                    for &extent in dims.iter().rev() {
                        let coord = (a / stride) % extent;
                        if coord + 1 < extent {
                            add(a, a + stride);
                        } else if wrap {
                            add(a, a - coord * stride);
                        }
                        stride *= extent;
                    }
                }
            }
        }
        e.into_iter().collect()
    }

    /// Every known shape with `n` nodes, most specific name first.
    fn candidates(n: usize) -> Vec<KnownShape> {
        let mut v = vec![
            KnownShape::AllToAll(n),
            KnownShape::Star(n),
            KnownShape::Bus(n),
            KnownShape::Ring(n),
        ];
        if n.is_power_of_two() && n >= 4 {
            v.push(KnownShape::Hypercube(n.trailing_zeros()));
        }
        v.push(KnownShape::Tree(n));
        let grids = factorizations(n, n);
        v.extend(grids.iter().cloned().map(KnownShape::Mesh));
        v.extend(grids.into_iter().map(KnownShape::Torus));
        v
    }
}

/// Ordered factorizations of `n` into at least two extents >= 2, non-increasing, each <= `max`.
fn factorizations(n: usize, max: usize) -> Vec<Vec<usize>> {
    let mut out = Vec::new();
    for f in (2..=max.min(n / 2)).rev() {
        if n % f != 0 {
            continue;
        }
        let rest = n / f;
        if rest <= f {
            out.push(vec![f, rest]);
        }
        for mut tail in factorizations(rest, f) {
            tail.insert(0, f);
            out.push(tail);
        }
    }
    out.retain(|d| d.iter().all(|x| *x >= 2));
    out
}

/// An undirected graph as an adjacency matrix.
struct Graph {
    n: usize,
    adj: Vec<bool>,
    nbrs: Vec<Vec<usize>>,
}

impl Graph {
    fn new(n: usize, edges: &[(usize, usize)]) -> Graph {
        let mut g = Graph {
            n,
            adj: vec![false; n * n],
            nbrs: vec![Vec::new(); n],
        };
        for &(a, b) in edges {
            if a != b && a < n && b < n && !g.adj[a * n + b] {
                g.adj[a * n + b] = true;
                g.adj[b * n + a] = true;
                g.nbrs[a].push(b);
                g.nbrs[b].push(a);
            }
        }
        g
    }

    fn edge(&self, a: usize, b: usize) -> bool {
        self.adj[a * self.n + b]
    }

    fn degrees(&self) -> Vec<usize> {
        let mut d: Vec<usize> = self.nbrs.iter().map(Vec::len).collect();
        d.sort_unstable();
        d
    }
}

/// Whether `p` (connected) and `g` are isomorphic, by backtracking over `p`'s vertices in
/// BFS order; `None` when the search budget ran out.
fn isomorphic(p: &Graph, g: &Graph) -> Option<bool> {
    if p.n != g.n || p.degrees() != g.degrees() {
        return Some(false);
    }
    let mut order = vec![0usize];
    let mut parent = vec![usize::MAX; p.n];
    let mut seen = vec![false; p.n];
    seen[0] = true;
    let mut i = 0;
    while i < order.len() {
        for &w in &p.nbrs[order[i]] {
            if !seen[w] {
                seen[w] = true;
                parent[w] = order[i];
                order.push(w);
            }
        }
        i += 1;
    }
    if order.len() != p.n {
        return Some(false);
    }
    struct Search<'a> {
        p: &'a Graph,
        g: &'a Graph,
        order: Vec<usize>,
        parent: Vec<usize>,
        map: Vec<usize>,
        used: Vec<bool>,
        steps: u64,
    }
    impl Search<'_> {
        fn extend(&mut self, k: usize) -> Option<bool> {
            if k == self.order.len() {
                return Some(true);
            }
            let v = self.order[k];
            let pool: Vec<usize> = if k == 0 {
                (0..self.g.n).collect()
            } else {
                self.g.nbrs[self.map[self.parent[v]]].clone()
            };
            for c in pool {
                self.steps += 1;
                if self.steps > ISO_BUDGET {
                    return None;
                }
                if self.used[c] || self.g.nbrs[c].len() != self.p.nbrs[v].len() {
                    continue;
                }
                let fits = self.order[..k]
                    .iter()
                    .all(|&u| self.p.edge(v, u) == self.g.edge(c, self.map[u]));
                if !fits {
                    continue;
                }
                self.map[v] = c;
                self.used[c] = true;
                if self.extend(k + 1)? {
                    return Some(true);
                }
                self.used[c] = false;
            }
            Some(false)
        }
    }
    let mut s = Search {
        p,
        g,
        order,
        parent,
        map: vec![usize::MAX; p.n],
        used: vec![false; p.n],
        steps: 0,
    };
    s.extend(0)
}

/// Names the topology of the graph on nodes `0..n` with these edges: every known shape it
/// is isomorphic to, most specific first; empty when it is none of them (or is too large,
/// or has isolated nodes).
pub fn classify(n: usize, edges: &[(usize, usize)]) -> Vec<KnownShape> {
    if !(2..=MAX_CLASSIFY_NODES).contains(&n) {
        return Vec::new();
    }
    let g = Graph::new(n, edges);
    KnownShape::candidates(n)
        .into_iter()
        .filter(|s| isomorphic(&Graph::new(n, &s.edges()), &g) == Some(true))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn names(n: usize, e: &[(usize, usize)]) -> Vec<String> {
        classify(n, e).iter().map(ToString::to_string).collect()
    }

    #[test]
    fn edge_sets_of_known_shapes() {
        assert_eq!(KnownShape::Ring(4).edges(), vec![(0, 1), (0, 3), (1, 2), (2, 3)]);
        assert_eq!(KnownShape::Bus(3).edges(), vec![(0, 1), (1, 2)]);
        assert_eq!(KnownShape::Tree(5).edges(), vec![(0, 1), (0, 2), (1, 3), (1, 4)]);
        assert_eq!(KnownShape::Mesh(vec![2, 3]).edges().len(), 7);
        assert_eq!(KnownShape::Torus(vec![3, 3]).edges().len(), 18);
        assert_eq!(
            KnownShape::Torus(vec![2, 4]).edges().len(),
            12,
            "a wrap over 2 adds nothing"
        );
        assert_eq!(KnownShape::Hypercube(3).edges().len(), 12);
        assert_eq!(KnownShape::AllToAll(8).edges().len(), 28);
    }

    #[test]
    fn parses_shapes_and_refuses_bad_sizes() {
        assert_eq!(KnownShape::parse("mesh:2x4", 8), Ok(KnownShape::Mesh(vec![4, 2])));
        assert_eq!(KnownShape::parse("hypercube", 8), Ok(KnownShape::Hypercube(3)));
        assert_eq!(KnownShape::parse("chain", 3), Ok(KnownShape::Bus(3)));
        assert!(matches!(
            KnownShape::parse("mesh:3x3", 8),
            Err(ShapeError::Size { .. })
        ));
        assert!(matches!(
            KnownShape::parse("hypercube", 6),
            Err(ShapeError::Size { .. })
        ));
        assert!(matches!(
            KnownShape::parse("mesh:1x8", 8),
            Err(ShapeError::Size { .. })
        ));
        assert!(matches!(
            KnownShape::parse("blob", 8),
            Err(ShapeError::Unknown(_))
        ));
    }

    #[test]
    fn classifies_eight_node_shapes_with_their_aliases() {
        let cases: Vec<(KnownShape, &str)> = vec![
            (KnownShape::AllToAll(8), "all-to-all"),
            (KnownShape::Star(8), "star"),
            (KnownShape::Bus(8), "bus"),
            (KnownShape::Ring(8), "ring"),
            (KnownShape::Hypercube(3), "hypercube 3-D"),
            (KnownShape::Tree(8), "binary tree"),
            (KnownShape::Mesh(vec![4, 2]), "mesh 4x2"),
            (KnownShape::Torus(vec![4, 2]), "hypercube 3-D"),
        ];
        for (shape, first) in cases {
            let got = names(8, &shape.edges());
            assert_eq!(got.first().map(String::as_str), Some(first), "{shape}: {got:?}");
        }
        assert!(names(8, &KnownShape::Torus(vec![4, 2]).edges()).contains(&"torus 4x2".to_string()));
        assert_eq!(
            names(9, &KnownShape::Torus(vec![3, 3]).edges()),
            vec!["torus 3x3"]
        );
        assert_eq!(
            names(4, &KnownShape::Ring(4).edges()),
            vec!["ring", "hypercube 2-D", "mesh 2x2", "torus 2x2"]
        );
    }

    #[test]
    fn unknown_graphs_have_no_name() {
        // A triangle with a tail: connected, not a known shape.
        assert!(classify(4, &[(0, 1), (1, 2), (0, 2), (2, 3)]).is_empty());
        // Two disjoint edges.
        assert!(classify(4, &[(0, 1), (2, 3)]).is_empty());
        assert!(classify(1, &[]).is_empty());
    }

    proptest! {
        #[test]
        fn classification_ignores_node_numbering(
            pick in 0usize..7,
            seed in proptest::collection::vec(any::<u32>(), 16),
        ) {
            let shape = [
                KnownShape::Ring(12), KnownShape::Bus(10), KnownShape::Mesh(vec![4, 4]), KnownShape::Torus(vec![4, 3]),
                KnownShape::Hypercube(4), KnownShape::Tree(15), KnownShape::Star(9),
            ][pick].clone();
            let n = shape.nodes();
            let mut perm: Vec<usize> = (0..n).collect();
            for i in (1..n).rev() {
                perm.swap(i, seed[i % seed.len()] as usize % (i + 1));
            }
            let edges: Vec<(usize, usize)> = shape.edges().iter().map(|&(a, b)| (perm[a], perm[b])).collect();
            let got = classify(n, &edges);
            prop_assert!(got.contains(&shape), "{shape} not in {got:?}");
        }
    }
}
