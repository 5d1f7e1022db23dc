"""The protocol of recurrent models, the one place that says what "recurrent" means.

A recurrent model carries a hidden state from frame to frame. It is registered with a
`clip_length` (the trainer feeds it clips) and has:
- `recurrent = True`;
- `state_channels`: C of its state (B, H', W', C), H' and W' being H and W padded as it pads them;
- `initial_state(window)`: the zero state for a window (B, 2R+1, H, W, 1);
- `step(window, hidden)`: one frame, -> (enhanced (B, H, W, 1), next hidden);
- `model(clip)`: a clip (B, L, H, W, 1) -> every enhanced frame (B, L, H, W, 1).
Every other model is a window model: (B, 2R+1, H, W, 1) -> the enhanced centre (B, H, W, 1).
Runners of exports (vcar_tf.inference.saved_model) follow the same protocol.
"""

PROTOCOL = ("state_channels", "initial_state", "step")


def is_recurrent(model):
    """True for a model (Keras or an export's runner) that follows the recurrent protocol."""
    return bool(getattr(model, "recurrent", False))


def state_channels(model):
    """C of a recurrent model's hidden state."""
    return int(model.state_channels)
