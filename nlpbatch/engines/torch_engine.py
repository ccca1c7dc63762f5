"""The PyTorch engine: CPU or GPU (bf16 on GPU), padded batches or packed varlen sequences (nlpbatch.packing)."""

from __future__ import annotations

import numpy as np

from nlpbatch import packing as packed  # the module; `packing` is the mode argument below


class TorchEngine:
    """`reduce=True`: the task's reduction runs where the outputs are (on the GPU: NER's argmax and softmax, so one
    label byte and one probability per token come back instead of a row of logits). `packing`: "on" runs packed
    sequences (nlpbatch.packing), "auto" does so on CUDA for BERT-type models when torch has varlen attention."""

    def __init__(
        self,
        task: str,
        model_path: str,
        use_gpu: bool = False,
        threads: int | None = None,
        packing: str = "off",
        reduce: bool = False,
    ):
        import torch

        from nlpbatch.tasks import get_task

        if threads:
            torch.set_num_threads(threads)
        self.torch = torch
        self.device = torch.device("cuda" if use_gpu and torch.cuda.is_available() else "cpu")
        dtype = torch.bfloat16 if self.device.type == "cuda" else torch.float32
        self.task = get_task(task)
        self.model = self.task.load_trained(model_path).to(self.device, dtype=dtype).eval()
        self.outputs = list(self.task.head_outputs)
        self.config = self.model.config
        self.reduce = reduce
        self.packs = not self.task.window_columns and (
            packing == "on"
            or packing == "auto"
            and self.device.type == "cuda"
            and packed.varlen_kernel() is not None
            and self.config.model_type in packed.PACKABLE_MODEL_TYPES
        )
        if self.packs:
            packed.enable(self.model)
        self.name = "torch" + ("-packed" if self.packs else "")

    def _tensor(self, array: np.ndarray):
        """Host array -> device tensor; through pinned memory and an asynchronous copy on CUDA."""
        tensor = self.torch.from_numpy(np.require(array, requirements="W"))  # copied only if read-only (Arrow's)
        if self.device.type == "cuda":
            return tensor.pin_memory().to(self.device, non_blocking=True)
        return tensor

    def _results(self, out) -> list[np.ndarray]:
        outputs = [getattr(out, name) for name in self.outputs]
        if self.reduce:
            outputs = self.task.reduce_torch(outputs)
        return [o.float().cpu().numpy() if o.is_floating_point() else o.cpu().numpy() for o in outputs]

    def __call__(self, ids: np.ndarray, mask: np.ndarray, types: np.ndarray) -> list[np.ndarray]:
        """Padded batch [windows, width] -> outputs [windows, width(, labels)]."""
        with self.torch.inference_mode():
            out = self.model(
                input_ids=self._tensor(ids), attention_mask=self._tensor(mask), token_type_ids=self._tensor(types)
            )
            return self._results(out)

    def packed(self, tokens: np.ndarray, types: np.ndarray, cu_seqlens: np.ndarray) -> list[np.ndarray]:
        """Packed windows (flat tokens, window boundaries) -> outputs [tokens(, labels)]."""
        with self.torch.inference_mode():
            out = packed.packed_forward(self.model, self._tensor(tokens), self._tensor(types), cu_seqlens)
            return [o[0] for o in self._results(out)]
