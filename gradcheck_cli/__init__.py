"""gradcheck: check softmax, cross-entropy and their gradients against finite differences."""
