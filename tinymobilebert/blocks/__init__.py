"""Building blocks: each a ``*_forward`` returning (output, cache) and a ``*_backward`` beside it.

Backward functions take the upstream gradient and the cache, accumulate parameter gradients
(``+=``) into the grads dict, and return the gradient of their inputs. Tensors are 2-D rows
(N = B*T tokens) except inside attention.
"""
