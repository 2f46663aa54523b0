// The cases of movement, tensor-parallel hand-ons, reductions, conv2d, pooling and the losses.
#include <utility>
#include <vector>

#include "tests/cpu/every_op/cases.h"
#include "tests/cpu/every_op/references.h"

namespace pf::cpu::every_op {

void add_structured_cases(std::vector<OpCase>& cs, Gen& g) {
  auto add = [&](OpKind op, Case c) { cs.push_back({op, std::move(c)}); };

  // Movement.
  // A reshape keeps the row-major order of the values.
  const Reference same_values = [](const std::vector<Tensor>& in, const std::vector<TensorType>&) {
    return Outputs{in[0].v};
  };
  add(OpKind::reshape, {"f64", {g.uniform({2, 3, 4})}, {dims_attr("shape", {4, -1})}, {}, same_values});
  add(OpKind::reshape, {"i32", {g.ints(DType::i32, {2, 6}, -9, 9)}, {dims_attr("shape", {12})}, {}, same_values});
  // Over a group of one rank, both meeting points of tensor parallelism hand
  // their operand on.
  add(OpKind::tp_copy, {"one rank", {g.uniform({3, 5})}, {}, {}, same_values});
  add(OpKind::tp_reduce, {"one rank", {g.uniform({2, 3, 4})}, {}, {}, same_values});
  add(OpKind::tp_max, {"one rank", {g.uniform({4, 3})}, {}, {}, same_values});
  // A group of one rank holds all the tokens: every sequence-parallel op hands them on.
  for (OpKind op : {OpKind::tp_reduce_scatter, OpKind::tp_all_gather, OpKind::tp_scatter, OpKind::tp_gather,
                    OpKind::ep_all_gather, OpKind::ep_reduce_scatter})
    add(op, {"one rank",
             {g.uniform({2, 3, 4})},
             {dim_attr("axis", 1), dim_attr("size", 3), dim_attr("rank", 0), dim_attr("ranks", 1)},
             {},
             same_values});
  struct Tr {
    const char* name;
    Shape s;
    std::vector<int64_t> perm;
  };
  for (const Tr& t : std::vector<Tr>{{"rows stay contiguous", {2, 3, 4, 5}, {0, 2, 1, 3}},
                                     {"2-D tiles, ragged", {3, 40, 33}, {0, 2, 1}},
                                     {"rotation", {2, 3, 4}, {2, 0, 1}},
                                     {"negative entries", {2, 3, 4}, {-1, 0, -2}},
                                     {"identity", {3, 4}, {0, 1}},
                                     {"size-1 dims", {1, 3, 1, 4}, {3, 2, 0, 1}}})
    add(OpKind::transpose, {t.name, {g.uniform(t.s)}, {dims_attr("perm", t.perm)}, {}, transpose_ref(t.perm)});
  add(OpKind::transpose, {"bool", {g.bools({3, 5})}, {dims_attr("perm", {1, 0})}, {}, transpose_ref({1, 0})});
  add(OpKind::slice, {"middle axis",
                      {g.uniform({3, 5, 4})},
                      {dim_attr("axis", 1), dim_attr("start", 1), dim_attr("end", 4)},
                      {},
                      slice_ref(1, 1)});
  add(OpKind::slice, {"last axis",
                      {g.uniform({3, 5})},
                      {dim_attr("axis", -1), dim_attr("start", 2), dim_attr("end", 5)},
                      {},
                      slice_ref(-1, 2)});
  add(OpKind::slice, {"first axis, i64",
                      {g.ints(DType::i64, {4, 3}, -5, 5)},
                      {dim_attr("axis", 0), dim_attr("start", 1), dim_attr("end", 3)},
                      {},
                      slice_ref(0, 1)});
  add(OpKind::concat, {"middle axis, three operands",
                       {g.uniform({2, 1, 3}), g.uniform({2, 2, 3}), g.uniform({2, 3, 3})},
                       {dim_attr("axis", 1)},
                       {},
                       concat_ref(1)});
  add(OpKind::concat, {"first axis", {g.uniform({1, 4}), g.uniform({2, 4})}, {dim_attr("axis", 0)}, {}, concat_ref(0)});
  add(OpKind::concat,
      {"last axis", {g.uniform({3, 2}), g.uniform({3, 1})}, {dim_attr("axis", -1)}, {}, concat_ref(-1)});
  add(OpKind::split,
      {"middle axis", {g.uniform({2, 6, 3})}, {dim_attr("axis", 1), dims_attr("sizes", {1, 2, 3})}, {}, split_ref(1)});
  add(OpKind::split, {"last axis with an empty part",
                      {g.uniform({4, 3})},
                      {dim_attr("axis", -1), dims_attr("sizes", {2, 0, 1})},
                      {},
                      split_ref(-1)});

  // Reductions: rows, columns, alternating axes, everything, keepdims.
  struct Rd {
    const char* name;
    Shape s;
    std::vector<int64_t> axes;
    bool keep;
  };
  for (const Rd& r : std::vector<Rd>{{"last axis", {2, 3, 9}, {-1}, false},
                                     {"first axis, keepdims", {6, 5}, {0}, true},
                                     {"outer and inner", {2, 3, 4}, {0, 2}, false},
                                     {"middle, keepdims", {2, 3, 4}, {1}, true},
                                     {"alternating", {3, 4, 5, 6}, {0, 2}, false},
                                     {"everything", {2, 3, 4}, {0, 1, 2}, false},
                                     {"size-1 axis", {4, 1, 3}, {1}, false}}) {
    std::vector<OpAttrs::Entry> attrs = {dims_attr("axes", r.axes)};
    if (r.keep) attrs.push_back(bool_attr("keepdims", true));
    add(OpKind::reduce_sum, {r.name, {g.uniform(r.s)}, attrs, {}, reduce_ref(r.axes, Red::sum)});
    add(OpKind::reduce_mean, {r.name, {g.uniform(r.s)}, attrs, {}, reduce_ref(r.axes, Red::mean)});
    add(OpKind::reduce_max, {r.name, {g.uniform(r.s)}, attrs, {}, reduce_ref(r.axes, Red::max)});
  }

  // conv2d: groups with stride, padding and bias; 1x1 without bias (read
  // directly); depthwise; a rectangular kernel.
  struct Cv {
    const char* name;
    Shape x, w;
    std::vector<int64_t> stride, pad;
    int64_t groups;
    bool bias;
  };
  for (const Cv& c :
       std::vector<Cv>{{"groups, stride, padding, bias", {2, 4, 5, 6}, {6, 2, 3, 3}, {2, 1}, {1, 1}, 2, true},
                       {"1x1 without bias", {2, 3, 4, 4}, {5, 3, 1, 1}, {1, 1}, {0, 0}, 1, false},
                       {"depthwise", {1, 3, 5, 5}, {3, 1, 3, 3}, {1, 1}, {1, 1}, 3, true},
                       {"rectangular kernel", {1, 3, 6, 7}, {4, 3, 2, 3}, {1, 2}, {0, 1}, 1, false},
                       {"1x1 strided", {1, 2, 5, 5}, {2, 2, 1, 1}, {2, 2}, {0, 0}, 1, true}}) {
    std::vector<Tensor> in = {g.uniform(c.x), g.uniform(c.w)};
    if (c.bias) in.push_back(g.uniform({c.w[0]}));
    add(OpKind::conv2d, {c.name,
                         in,
                         {dims_attr("stride", c.stride), dims_attr("padding", c.pad), dim_attr("groups", c.groups)},
                         {},
                         conv2d_ref(c.stride, c.pad, c.groups)});
  }
  for (bool max : {true, false}) {
    const OpKind op = max ? OpKind::max_pool2d : OpKind::avg_pool2d;
    add(op, {"2x2, stride defaults to kernel",
             {g.uniform({2, 3, 6, 7})},
             {dims_attr("kernel", {2, 2})},
             {},
             pool_ref({2, 2}, {2, 2}, {0, 0}, max)});
    add(op, {"3x3 stride 2 padding 1",
             {g.uniform({1, 2, 7, 6})},
             {dims_attr("kernel", {3, 3}), dims_attr("stride", {2, 2}), dims_attr("padding", {1, 1})},
             {},
             pool_ref({3, 3}, {2, 2}, {1, 1}, max)});
    add(op, {"rectangular, overlapping",
             {g.uniform({1, 1, 5, 6})},
             {dims_attr("kernel", {2, 3}), dims_attr("stride", {1, 1}), dims_attr("padding", {1, 0})},
             {},
             pool_ref({2, 3}, {1, 1}, {1, 0}, max)});
  }

  // Losses.
  add(OpKind::cross_entropy, {"default ignore_index -100, i64",
                              {g.uniform({2, 3, 5}, -4, 4), values(DType::i64, {2, 3}, {0, 4, -100, 2, 2, 1})},
                              {},
                              {},
                              cross_entropy_ref(-100)});
  add(OpKind::cross_entropy, {"ignore_index 2, i32",
                              {g.uniform({4, 7}, -4, 4), values(DType::i32, {4}, {2, 6, 0, 2})},
                              {dim_attr("ignore_index", 2)},
                              {},
                              cross_entropy_ref(2)});
  add(OpKind::cross_entropy, {"every target ignored",
                              {g.uniform({2, 3}), values(DType::i32, {2}, {-100, -100})},
                              {},
                              {},
                              cross_entropy_ref(-100)});
  add(OpKind::cross_entropy,
      {"one row", {g.uniform({6}), values(DType::i64, {}, {5})}, {}, {}, cross_entropy_ref(-100)});
  const Reference mse_ref = [](const std::vector<Tensor>& in, const std::vector<TensorType>&) {
    double s = 0;
    for (size_t i = 0; i < in[0].v.size(); ++i) s += (in[0].v[i] - in[1].v[i]) * (in[0].v[i] - in[1].v[i]);
    return Outputs{{s / static_cast<double>(in[0].v.size())}};
  };
  add(OpKind::cross_entropy_parts,
      {"classes 5..10 of 15, targets inside, outside and ignored",
       {g.uniform({2, 3, 5}, -4, 4), g.uniform({2, 3}, -1, 1), values(DType::i64, {2, 3}, {5, 9, 0, 14, -100, 7})},
       {dim_attr("offset", 5), dim_attr("vocab", 15)},
       {},
       cross_entropy_parts_ref(5)});
  add(OpKind::cross_entropy_parts, {"the whole vocabulary, i32",
                                    {g.uniform({4, 7}, -4, 4), g.uniform({4}), values(DType::i32, {4}, {2, 6, 0, 2})},
                                    {},
                                    {},
                                    cross_entropy_parts_ref(0)});
  add(OpKind::cross_entropy_total, {"ignore_index 2",
                                    {g.uniform({4, 2}, 0.5, 3), values(DType::i32, {4}, {2, 6, 0, 2})},
                                    {dim_attr("ignore_index", 2)},
                                    {},
                                    cross_entropy_total_ref(2)});
  add(OpKind::cross_entropy_total, {"every target ignored",
                                    {g.uniform({2, 2}, 0.5, 3), values(DType::i64, {2}, {-100, -100})},
                                    {},
                                    {},
                                    cross_entropy_total_ref(-100)});
  add(OpKind::mse_loss, {"3x5", {g.uniform({3, 5}), g.uniform({3, 5})}, {}, {}, mse_ref});
  add(OpKind::mse_loss, {"scalar", {g.uniform({}), g.uniform({})}, {}, {}, mse_ref});
}

}  // namespace pf::cpu::every_op
