"""Pipeforge from Python: compile a model into a pipeline plan and train it.

    import numpy as np
    import pipeforge

    plan = pipeforge.compile("examples/mlp.pf", devices="cpu:2", microbatches=4,
                             bind={"B": 32, "I": 64, "H": 64, "L": 1, "K": 10})
    runtime = pipeforge.Runtime(plan, optimizer="adamw", lr=1e-3)
    runtime.initialize(seed=0)
    batch = {"x": np.random.randn(32, 64).astype(np.float32),
             "labels": np.random.randint(0, 10, size=32)}  # int64: converted to int32
    loss = runtime.train_step(batch)

The compiler and the runtime are the C++ ones (`pipeforge compile`,
`pipeforge run`): the same plan, data, seed and options give the same losses
and weights, bit for bit. Errors they report raise pipeforge.Error; wrong
arguments (a batch of the wrong shape) raise ValueError.

A trained language model (one reading token ids, as examples/gpt.pf) goes
on from a prompt, as `pipeforge sample` does:

    lm = pipeforge.LanguageModel("examples/gpt.pf", "w.safetensors", bind={"L": 4, "C": 128})  # or a state_dict()
    text = bytes(lm.generate("The ", tokens=200, temperature=0.8, seed=1)).decode(errors="replace")

Schedules are data: generate one, read a schedule file, look at its lists,
time it, draw it, and compile for it:

    s = pipeforge.schedule("zbv", devices=4, microbatches=8)
    s.actions[0]                  # device 0's compute actions: ['F0c0', 'F1c0', ...]
    s.bubble(costs=(1, 2, 1))     # a forward 1, an input gradient 2, a weight gradient 1
    print(s.draw())               # the picture `pipeforge schedule` draws
    mine = pipeforge.read_schedule("mine.schedule")   # or the text itself
    plan = pipeforge.compile("examples/mlp.pf", devices="cpu:4", schedule_file=s)

A PyTorch model comes in through ONNX:

    torch.onnx.export(model, example, "model.onnx", training=torch.onnx.TrainingMode.TRAINING,
                      opset_version=17, input_names=["x"], dynamic_axes={"x": {0: "batch"}})
    ir, weights = pipeforge.import_onnx("model.onnx", loss="cross_entropy:labels")
    runtime = pipeforge.Runtime(pipeforge.compile(ir, devices="cpu:2", microbatches=4, batch=32))
    runtime.load_state_dict(weights)
"""

from pipeforge._pipeforge import (Error, LanguageModel, Plan, Runtime, Schedule, compile, import_onnx,
                                  read_schedule, schedule)

__all__ = ["Error", "LanguageModel", "Plan", "Runtime", "Schedule", "compile", "import_onnx", "read_schedule",
           "schedule"]
