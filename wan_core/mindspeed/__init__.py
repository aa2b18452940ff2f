"""MindSpeed-MM compatibility in one package: its config files mapped onto ours (`configs`), its checkpoint
pickles read safely (`unpickler`), and its Megatron pointer file (`pointer`). Its checkpoint layouts themselves
(release/, iter_*/, mm_to_dcp) are written by wan_core.weights.checkpoint_layout with the rest of the layouts."""
