"""A PyTorch module exported to ONNX, imported and trained pipelined from
Python: PyTorch's losses, step after step."""

import sys

import numpy as np
import pytest

import pipeforge
from conftest import SOURCE_DIR

torch = pytest.importorskip("torch")
pytest.importorskip("onnx")
sys.path.insert(0, str(SOURCE_DIR / "tests" / "onnx"))
import torch_models  # noqa: E402

STEPS = 5


@pytest.mark.parametrize("name", ["mlp", "gpt"])
def test_an_exported_module_trains_pipelined_with_pytorchs_losses(name, tmp_path):
    case = torch_models.CASES[name]
    torch.manual_seed(0)
    model = case.make()
    batch = case.batch(torch.Generator().manual_seed(1))
    path = tmp_path / f"{name}.onnx"
    torch.onnx.export(model, tuple(batch[n] for n in case.inputs), str(path),
                      training=torch.onnx.TrainingMode.TRAINING, opset_version=case.opset,
                      do_constant_folding=False, input_names=case.inputs, output_names=["logits"],
                      dynamic_axes={**{n: {0: "batch"} for n in case.inputs}, "logits": {0: "batch"}})

    size = len(batch[case.target])
    ir, weights = pipeforge.import_onnx(path, loss=f"cross_entropy:{case.target}", bind={"batch": size})
    assert set(weights) == {n for n, _ in model.named_parameters()}
    plan = pipeforge.compile(ir, devices="cpu:2", microbatches=2, schedule="1f1b")
    assert plan.stages == 2
    # PyTorch does not clip: neither does this run (the module clips to 1 unless told).
    runtime = pipeforge.Runtime(plan, optimizer="sgd", lr=0.1, momentum=0.9, clip=0)
    runtime.load_state_dict(weights)

    reference = model.double()
    optimizer = torch.optim.SGD(reference.parameters(), lr=0.1, momentum=0.9)
    inputs = [batch[n].double() if batch[n].is_floating_point() else batch[n] for n in case.inputs]
    numpy_batch = {n: t.numpy() for n, t in batch.items()}  # int64 indices become int32
    for _ in range(STEPS):
        optimizer.zero_grad()
        expected = case.loss(reference(*inputs), batch[case.target])
        expected.backward()
        optimizer.step()
        assert runtime.train_step(numpy_batch) == pytest.approx(expected.item(), rel=1e-4)


def test_an_op_it_cannot_translate_names_the_node(tmp_path):
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Hardmax", ["x"], ["y"], name="/head/Hardmax")], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])])
    path = tmp_path / "bad.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    with pytest.raises(pipeforge.Error) as e:
        pipeforge.import_onnx(path)
    assert e.value.message.startswith(f"{path}: node 0 '/head/Hardmax' (Hardmax): no translation for this op type; "
                                      "the importer translates Add, AveragePool,")
