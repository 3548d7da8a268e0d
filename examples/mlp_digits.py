"""The classic flow at a glance: build the MLP 128-64-10, compress it to 4 bits, train, evaluate.

python examples/mlp_digits.py        # needs scikit-learn (the bench extra) for the digits
"""

import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from fewbit.compress import compress_, convert, size_report
from fewbit.models import build_backbone

torch.manual_seed(0)
digits = load_digits()
x_train, x_test, y_train, y_test = (
    torch.tensor(a)
    for a in train_test_split(
        digits.data / 16.0, digits.target, test_size=0.25, stratify=digits.target, random_state=0
    )
)
x_train, x_test = x_train.float(), x_test.float()

model = build_backbone("mlp", ways=10, in_features=64, hidden=(128, 64))
compress_(model, "quant:w4:per_tensor")  # 4-bit weights, trained with quantization in the loop

optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
for _epoch in range(10):
    for batch in torch.randperm(len(x_train)).split(32):
        loss = F.cross_entropy(model(x_train[batch]), y_train[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

packed = convert(model)  # the packed 4-bit model that export stores
accuracy = (packed(x_test).argmax(1) == y_test).float().mean().item()
report = size_report(packed)
print(f"test accuracy {accuracy:.1%} in {report.bytes} bytes (float32: {report.float32_bytes})")
