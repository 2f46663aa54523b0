// The cases of attention (its gradient and the cached form too), embedding and the mixture-of-experts ops.
#include <utility>
#include <vector>

#include "tests/cpu/every_op/cases.h"
#include "tests/cpu/every_op/references.h"

namespace pf::cpu::every_op {

MoeRoutes add_attention_and_moe_cases(std::vector<OpCase>& cs, Gen& g) {
  const DType f64 = DType::f64;
  auto add = [&](OpKind op, Case c) { cs.push_back({op, std::move(c)}); };

  struct Att {
    const char* name;
    Shape shape;
    std::vector<OpAttrs::Entry> attrs;
  };
  // T = 70 crosses the kernels' 64-row tiles; T = 1 has one key. Under
  // layout "bthd" q is [B, T, H, D]: rows of a head lie H * D apart.
  for (const Att& a : std::vector<Att>{
           {"causal, two batch axes, rows past a tile",
            {2, 2, 70, 5},
            {bool_attr("causal", true), real_attr("scale", 0.3)}},
           {"not causal, default scale", {3, 9, 4}, {}},
           {"causal, one row", {2, 1, 3}, {bool_attr("causal", true)}},
           {"bthd, causal, rows past a tile",
            {2, 70, 3, 5},
            {bool_attr("causal", true), string_attr("layout", "bthd")}},
           {"bthd, not causal, no batch axis", {9, 2, 4}, {real_attr("scale", 0.6), string_attr("layout", "bthd")}},
           {"bhtd written", {2, 5, 3}, {string_attr("layout", "bhtd")}}}) {
    add(OpKind::attention, {a.name, {g.uniform(a.shape), g.uniform(a.shape), g.uniform(a.shape)}, a.attrs, {},
                            attention_ref(a.attrs)});
    Tensor q = g.uniform(a.shape), k = g.uniform(a.shape), v = g.uniform(a.shape);
    const auto forward = attention_of(attention_geometry(q.type, a.attrs), q.v, k.v, v.v);
    Shape rows(a.shape.begin(), a.shape.end() - 1);  // lse: [..., H, T]
    if (attention_geometry(q.type, a.attrs).inner > 1) std::swap(rows[rows.size() - 1], rows[rows.size() - 2]);
    add(OpKind::attention_grad, {a.name,
                                 {g.uniform(a.shape), q, k, v, values(f64, a.shape, forward.first),
                                  values(f64, rows, forward.second)},
                                 a.attrs,
                                 {},
                                 attention_grad_ref(a.attrs)});
  }

  // Grouped-query attention: k and v with size 1 on a heads axis of q (two
  // groups of three heads; one key head for all, as multi-query attention),
  // rows past a tile.
  struct Grouped {
    const char* name;
    Shape q, k;
    std::vector<OpAttrs::Entry> attrs;
  };
  Gen grouped_inputs(37);  // its own stream: the cases after these keep their inputs
  for (const Grouped& c : std::vector<Grouped>{
           {"grouped, causal", {2, 2, 3, 6, 4}, {2, 2, 1, 6, 4}, {bool_attr("causal", true)}},
           {"multi-query, not causal", {1, 4, 5, 3}, {1, 1, 5, 3}, {real_attr("scale", 0.7)}},
           {"grouped, causal, rows past a tile", {1, 2, 2, 70, 3}, {1, 2, 1, 70, 3}, {bool_attr("causal", true)}}}) {
    Gen& r = grouped_inputs;
    add(OpKind::attention,
        {c.name, {r.uniform(c.q), r.uniform(c.k), r.uniform(c.k)}, c.attrs, {}, attention_ref(c.attrs)});
    const Tensor q = r.uniform(c.q), k = r.uniform(c.k), v = r.uniform(c.k);
    const auto forward =
        attention_of(attention_geometry(q.type, c.attrs), q.v, repeat_keys(k, c.q), repeat_keys(v, c.q));
    add(OpKind::attention_grad, {c.name,
                                 {r.uniform(c.q), q, k, v, values(f64, c.q, forward.first),
                                  values(f64, Shape(c.q.begin(), c.q.end() - 1), forward.second)},
                                 c.attrs,
                                 {},
                                 attention_grad_ref(c.attrs)});
  }

  // cached_attention: one token after 69 cached, a prompt read into an empty
  // cache, and several tokens after some (forty: the cache read in several
  // tiles), in both layouts; the cache's rows past the filled ones are never
  // read.
  struct Cached {
    const char* name;
    Shape fresh, cache;
    int64_t filled;
    std::vector<OpAttrs::Entry> attrs;
    Shape keys = {};  // k and v where they are fewer heads than q's (grouped)
  };
  Gen cached_inputs(29);  // its own stream: the cases after these keep their inputs
  for (const Cached& c : std::vector<Cached>{
           {"one token after a tile and more", {2, 2, 1, 5}, {2, 2, 80, 5}, 69, {real_attr("scale", 0.3)}},
           {"a prompt into an empty cache", {2, 70, 4}, {2, 72, 4}, 0, {}},
           {"bthd, three tokens after five", {1, 3, 2, 4}, {1, 16, 2, 4}, 5, {string_attr("layout", "bthd")}},
           {"bthd, the last positions", {2, 4, 3, 2}, {2, 9, 3, 2}, 5, {string_attr("layout", "bthd")}},
           {"bthd, forty tokens after a hundred: the cache in tiles", {1, 40, 2, 3}, {1, 150, 2, 3}, 100,
            {string_attr("layout", "bthd")}},
           {"grouped, two tokens after nine", {1, 2, 3, 2, 4}, {1, 2, 1, 20, 4}, 9, {}, {1, 2, 1, 2, 4}}}) {
    const int64_t n = attention_geometry({f64, c.fresh}, c.attrs).t;
    const Shape keys = c.keys.empty() ? c.fresh : c.keys;
    std::vector<double> positions(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) positions[static_cast<size_t>(i)] = static_cast<double>(c.filled + i);
    Gen& r = cached_inputs;
    add(OpKind::cached_attention, {c.name,
                                   {r.uniform(c.fresh), r.uniform(keys), r.uniform(keys), r.uniform(c.cache),
                                    r.uniform(c.cache), values(DType::i32, {n}, positions)},
                                   c.attrs,
                                   {},
                                   cached_attention_ref(c.attrs)});
  }

  // Each sequence after its own filled rows (positions [B, N]): one token
  // after 3 and after 17, and two tokens after 0, 7 and 4 in bthd.
  add(OpKind::cached_attention,
      {"each sequence's own positions, one token",
       {cached_inputs.uniform({2, 2, 1, 5}), cached_inputs.uniform({2, 2, 1, 5}), cached_inputs.uniform({2, 2, 1, 5}),
        cached_inputs.uniform({2, 2, 20, 5}), cached_inputs.uniform({2, 2, 20, 5}),
        values(DType::i32, {2, 1}, {3, 17})},
       {},
       {},
       cached_attention_ref({})});
  add(OpKind::cached_attention,
      {"bthd, each sequence's own positions, two tokens",
       {cached_inputs.uniform({3, 2, 2, 4}), cached_inputs.uniform({3, 2, 2, 4}), cached_inputs.uniform({3, 2, 2, 4}),
        cached_inputs.uniform({3, 10, 2, 4}), cached_inputs.uniform({3, 10, 2, 4}),
        values(DType::i64, {3, 2}, {0, 1, 7, 8, 4, 5})},
       {string_attr("layout", "bthd")},
       {},
       cached_attention_ref({string_attr("layout", "bthd")})});

  add(OpKind::embedding,
      {"i32 ids", {g.uniform({10, 4}), values(DType::i32, {2, 3}, {0, 9, 3, 3, 1, 9})}, {}, {}, embedding_ref});
  add(OpKind::embedding, {"i64 ids", {g.uniform({6, 3}), g.ints(DType::i64, {5}, 0, 5)}, {}, {}, embedding_ref});
  add(OpKind::embedding, {"rows 4..8 of 12: ids below, inside, above",
                          {g.uniform({4, 3}), values(DType::i32, {2, 3}, {0, 4, 7, 8, 11, 5})},
                          {dim_attr("offset", 4), dim_attr("vocab", 12)},
                          {},
                          embedding_share_ref(4)});

  // Mixture of experts: 7 tokens over 4 experts. Every slot for every token
  // (no drops), 3 slots (the second choices of the last tokens dropped),
  // equal logits (ties to the lower expert), all experts per token, and the
  // Switch gate (a softmax over every expert).
  const Tensor router = g.uniform({7, 4}, -3, 3);
  const Tensor tied = values(f64, {3, 4}, {1, 2, 2, 0, 0.5, 0.5, 0.5, 0.5, -1, 3, -1, 3});
  add(OpKind::moe_route, {"top 2, dropless", {router}, {dim_attr("top_k", 2)}, {}, moe_route_ref(2)});
  add(OpKind::moe_route, {"top 2, capacity factor 0.6: 3 slots",
                          {router},
                          {dim_attr("top_k", 2), real_attr("capacity_factor", 0.6)},
                          {},
                          moe_route_ref(2)});
  add(OpKind::moe_route, {"top 2, 3 slots, the likeliest kept",
                          {router},
                          {dim_attr("top_k", 2), real_attr("capacity_factor", 0.6), string_attr("drop", "probs")},
                          {},
                          moe_route_ref(2, true)});
  add(OpKind::moe_route, {"equal logits", {tied}, {dim_attr("top_k", 3)}, {}, moe_route_ref(3)});
  add(OpKind::moe_route, {"top 1 of 4, 1 slot", {router}, {dim_attr("top_k", 1), real_attr("capacity_factor", 0.1)},
                          {}, moe_route_ref(1)});
  add(OpKind::moe_load, {"top 2", {router}, {dim_attr("top_k", 2)}, {}, moe_load_ref(2)});
  add(OpKind::moe_load, {"equal logits, top 3", {tied}, {dim_attr("top_k", 3)}, {}, moe_load_ref(3)});
  const Tensor dropless = moe_route_of(router, 2, 7), dropping = moe_route_of(router, 2, 3);
  const Tensor switched = moe_route_of(router, 1, 3), every = moe_route_of(router, 4, 7);
  add(OpKind::moe_gates, {"top 2, dropless", {router, dropless}, {dim_attr("top_k", 2)}, {}, moe_gates_ref(2, true)});
  add(OpKind::moe_gates,
      {"top 2, dropped choices", {router, dropping}, {dim_attr("top_k", 2)}, {}, moe_gates_ref(2, true)});
  add(OpKind::moe_gates, {"top 4 of 4", {router, every}, {dim_attr("top_k", 4)}, {}, moe_gates_ref(4, true)});
  add(OpKind::moe_gates, {"switch: top 1, softmax over all",
                          {router, switched},
                          {dim_attr("top_k", 1), bool_attr("renormalize", false)},
                          {},
                          moe_gates_ref(1, false)});
  add(OpKind::moe_dispatch, {"dropless", {g.uniform({7, 5}), dropless}, {}, {}, moe_dispatch_ref});
  add(OpKind::moe_dispatch, {"empty slots", {g.uniform({7, 3}), dropping}, {}, {}, moe_dispatch_ref});
  add(OpKind::moe_combine,
      {"weighed", {g.uniform({4, 7, 5}), dropless, g.uniform({4, 7})}, {dim_attr("tokens", 7)}, {}, moe_combine_ref});
  // Expert 0 fills 3 of its 3 slots when dropping and some experts fewer.
  // Dropless: 14 choices in 28 slots, so every expert has slots past its last in use.
  const Tensor slots_a = g.uniform({4, 7, 5}, -6, 6), slots_b = g.uniform({4, 7, 5});
  add(OpKind::swiglu, {"3x7", {g.uniform({3, 7}, -8, 8), g.uniform({3, 7})}, {}, {}, swiglu_ref(false)});
  add(OpKind::swiglu, {"slots in use", {slots_a, slots_b, dropless}, {}, {}, swiglu_ref(false)});
  add(OpKind::swiglu_grad,
      {"3x7", {g.uniform({3, 7}), g.uniform({3, 7}, -8, 8), g.uniform({3, 7})}, {}, {}, swiglu_ref(true)});
  add(OpKind::swiglu_grad,
      {"slots in use", {g.uniform({4, 7, 5}), slots_a, slots_b, dropless}, {}, {}, swiglu_ref(true)});
  add(OpKind::moe_matmul,
      {"slots in use", {g.uniform({4, 3, 5}), g.uniform({4, 5, 6}), dropping}, {}, {}, moe_matmul_ref(false, false)});
  add(OpKind::moe_matmul, {"transpose_b",
                           {g.uniform({4, 7, 5}), g.uniform({4, 6, 5}), dropless},
                           {bool_attr("transpose_b", true)},
                           {},
                           moe_matmul_ref(false, true)});
  add(OpKind::moe_matmul, {"transpose_a: summed over the slots in use",
                           {g.uniform({4, 3, 5}), g.uniform({4, 3, 2}), dropping},
                           {bool_attr("transpose_a", true)},
                           {},
                           moe_matmul_ref(true, false)});
  add(OpKind::moe_combine, {"unweighed, empty slots, a token in none",
                            {g.uniform({4, 3, 2}), dropping},
                            {dim_attr("tokens", 7)},
                            {},
                            moe_combine_ref});
  return {router, dropless, dropping, switched};
}

}  // namespace pf::cpu::every_op
