"""Writes a small ONNX model for the importer's lit tests, built node by node
with onnx.helper (as torch.onnx.export spells these patterns).

    make_onnx.py NAME OUT.onnx
"""

import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def const(name, value, dtype=np.float32):
    return helper.make_node("Constant", [], [name], value=numpy_helper.from_array(np.array(value, dtype=dtype)), name=f"/{name}")


def x_input(shape=("batch", 8)):
    return helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))


def model(nodes, inputs, output_shape, initializers=(), opset=17, output="y"):
    graph = helper.make_graph(nodes, "test", inputs, [helper.make_tensor_value_info(output, TensorProto.FLOAT, list(output_shape))],
                              initializer=list(initializers))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="make_onnx")


def linear():
    w = numpy_helper.from_array(np.ones((3, 8), np.float32), "fc.weight")
    b = numpy_helper.from_array(np.zeros(3, np.float32), "fc.bias")
    nodes = [helper.make_node("Transpose", ["fc.weight"], ["wt"], perm=[1, 0], name="/fc/Transpose"),
             helper.make_node("MatMul", ["x", "wt"], ["mm"], name="/fc/MatMul"),
             helper.make_node("Add", ["fc.bias", "mm"], ["y"], name="/fc/Add")]
    return model(nodes, [x_input()], ("batch", 3), [w, b])


def gelu_tanh(shared=False):
    nodes = [helper.make_node("Mul", ["x", "x"], ["sq"], name="/act/Mul"),
             helper.make_node("Mul", ["x", "sq"], ["cube"], name="/act/Mul_1"),
             const("c1", 0.044715),
             helper.make_node("Mul", ["c1", "cube"], ["term"], name="/act/Mul_2"),
             helper.make_node("Add", ["x", "term"], ["inner"], name="/act/Add"),
             const("c2", 0.7978845608),
             helper.make_node("Mul", ["c2", "inner"], ["scaled"], name="/act/Mul_3"),
             helper.make_node("Tanh", ["scaled"], ["t"], name="/act/Tanh"),
             const("one", 1.0),
             helper.make_node("Add", ["one", "t"], ["onep"], name="/act/Add_1"),
             helper.make_node("Mul", ["x", "onep"], ["prod"], name="/act/Mul_4"),
             const("half", 0.5),
             helper.make_node("Mul", ["half", "prod"], ["g"], name="/act/Mul_5")]
    # With `shared`, an intermediate is read elsewhere too: no fusion.
    nodes.append(helper.make_node("Add", ["g", "inner" if shared else "x"], ["y"], name="/out/Add"))
    return model(nodes, [x_input()], ("batch", 8))


def gelu_erf():
    nodes = [const("sqrt2", 1.4142135623730951),
             helper.make_node("Div", ["x", "sqrt2"], ["d"], name="/act/Div"),
             helper.make_node("Erf", ["d"], ["e"], name="/act/Erf"),
             const("one", 1.0),
             helper.make_node("Add", ["e", "one"], ["onep"], name="/act/Add"),
             helper.make_node("Mul", ["x", "onep"], ["prod"], name="/act/Mul"),
             const("half", 0.5),
             helper.make_node("Mul", ["prod", "half"], ["y"], name="/act/Mul_1")]
    return model(nodes, [x_input()], ("batch", 8))


def layernorm():
    w = numpy_helper.from_array(np.ones(8, np.float32), "ln.weight")
    b = numpy_helper.from_array(np.zeros(8, np.float32), "ln.bias")
    nodes = [helper.make_node("ReduceMean", ["x"], ["mean"], axes=[-1], name="/ln/ReduceMean"),
             helper.make_node("Sub", ["x", "mean"], ["d"], name="/ln/Sub"),
             const("two", 2.0),
             helper.make_node("Pow", ["d", "two"], ["sq"], name="/ln/Pow"),
             helper.make_node("ReduceMean", ["sq"], ["var"], axes=[-1], name="/ln/ReduceMean_1"),
             const("eps", 1e-5),
             helper.make_node("Add", ["var", "eps"], ["ve"], name="/ln/Add"),
             helper.make_node("Sqrt", ["ve"], ["std"], name="/ln/Sqrt"),
             helper.make_node("Div", ["d", "std"], ["n"], name="/ln/Div"),
             helper.make_node("Mul", ["n", "ln.weight"], ["s"], name="/ln/Mul"),
             helper.make_node("Add", ["s", "ln.bias"], ["y"], name="/ln/Add_1")]
    return model(nodes, [x_input()], ("batch", 8), [w, b], opset=13)


def rmsnorm_silu(reciprocal=False):
    """Llama's RMSNorm then F.silu, as torch.onnx.export (1.13, opset 17) writes them: rsqrt as 1 / Sqrt
    (or, with `reciprocal`, a Reciprocal node)."""
    w = numpy_helper.from_array(np.ones(8, np.float32), "norm.weight")
    if reciprocal:
        inverse = [helper.make_node("Reciprocal", ["root"], ["inv"], name="/norm/Reciprocal")]
    else:
        inverse = [const("one", 1.0), helper.make_node("Div", ["one", "root"], ["inv"], name="/norm/Div")]
    nodes = [const("two", 2.0),
             helper.make_node("Pow", ["x", "two"], ["sq"], name="/norm/Pow"),
             helper.make_node("ReduceMean", ["sq"], ["ms"], axes=[-1], name="/norm/ReduceMean"),
             const("eps", 1e-5),
             helper.make_node("Add", ["ms", "eps"], ["mse"], name="/norm/Add"),
             helper.make_node("Sqrt", ["mse"], ["root"], name="/norm/Sqrt")] + inverse + [
             helper.make_node("Mul", ["x", "inv"], ["h"], name="/norm/Mul"),
             helper.make_node("Mul", ["norm.weight", "h"], ["n"], name="/norm/Mul_1"),
             helper.make_node("Sigmoid", ["n"], ["s"], name="/act/Sigmoid"),
             helper.make_node("Mul", ["n", "s"], ["y"], name="/act/Mul")]
    return model(nodes, [x_input()], ("batch", 8), [w])


def shapes():
    # x.view(x.size(0), 2, 4): the batch read off at run time.
    nodes = [helper.make_node("Shape", ["x"], ["s"], name="/Shape"),
             const("zero", 0, np.int64),
             helper.make_node("Gather", ["s", "zero"], ["b"], axis=0, name="/Gather"),
             const("axes", [0], np.int64),
             helper.make_node("Unsqueeze", ["b", "axes"], ["b1"], name="/Unsqueeze"),
             const("rest", [2, 4], np.int64),
             helper.make_node("Concat", ["b1", "rest"], ["shape"], axis=0, name="/Concat"),
             helper.make_node("Reshape", ["x", "shape"], ["r"], name="/Reshape"),
             const("minus", [-1, 8], np.int64),
             helper.make_node("Reshape", ["r", "minus"], ["y"], name="/Reshape_1")]
    return model(nodes, [x_input()], ("batch", 8))


def causal():
    mask = numpy_helper.from_array(np.tril(np.ones((4, 4), bool)), "mask")
    nodes = [helper.make_node("Not", ["mask"], ["upper"], name="/Not"),
             const("minf", -np.inf),
             helper.make_node("Where", ["upper", "minf", "x"], ["y"], name="/Where")]
    return model(nodes, [x_input(("batch", 4, 4))], ("batch", 4, 4), [mask])


def unsupported():
    nodes = [helper.make_node("Hardmax", ["x"], ["y"], name="/head/Hardmax")]
    return model(nodes, [x_input()], ("batch", 8))


MODELS = {"linear": linear, "gelu_tanh": gelu_tanh, "gelu_tanh_shared": lambda: gelu_tanh(True), "gelu_erf": gelu_erf,
          "rmsnorm_silu": rmsnorm_silu, "rmsnorm_reciprocal": lambda: rmsnorm_silu(True),
          "layernorm": layernorm, "shapes": shapes, "causal": causal, "unsupported": unsupported}

if __name__ == "__main__":
    onnx.save(MODELS[sys.argv[1]](), sys.argv[2])
