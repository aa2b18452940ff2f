"""Every run parameter's description, in one place: what it does, its units and its allowed values. The Kubeflow
UI's run form shows them (KFP reads the pipeline function's docstring `Args:` into the compiled IR);
`described` writes that docstring for a pipeline from its signature, and refuses a parameter with none."""
from __future__ import annotations

import inspect

from components.k8s.launcher import LAUNCHERS
from wan_core.model.variants import VARIANTS

DESCRIPTIONS = {
    # inputs and outputs
    "base_model": "Diffusers-format Wan2.2 pipeline folder training starts from (a path on the data volume or an "
                  "fsspec URL); its variant must match train_config's model.variant.",
    "data_txt": "MindSpeed-MM data.txt listing the data.json datasets to train on (validated first).",
    "workdir": "Folder for this run's outputs (manifest, converted weights, checkpoints, exports, samples).",
    "prompts": "Text file with one prompt a line; one video per prompt.",
    "images": "Text file with one first-frame image path a line, one per prompt (i2v, and ti2v when given); "
              "empty for none.",
    "train_config": "The training config: a YAML/JSON document, or the path of one on the data volume. Every key "
                    "of `wan22 train --config` is allowed (docs/training-config.md lists them: model.variant, "
                    "data.*, train.* incl. activation_checkpointing, grad_accum, warmup, compile, lora, "
                    "parallel.cp/cp_algo/ulysses_degree, objective.*); model.variant is one of "
                    f"{', '.join(VARIANTS)}. The pipeline sets model.from_pretrained, "
                    "model.expert, the data source, save_path and load_path.",
    "train_set": "Overrides of train_config in `wan22 train --set` grammar, applied in order, e.g. "
                 '["train.activation_checkpointing=true", "train.grad_accum=2", "parallel.cp=8"].',
    # deployment
    "launcher": f"Where training runs: {', '.join(LAUNCHERS)}. local = torchrun in the step's own pod on "
                "devices_per_node devices; the others submit a multi-node job of that kind and watch it.",
    "nnodes": "Training nodes (integer >= 1). Processes = nnodes x devices_per_node; the parallel layout is "
              "checked against it before anything runs.",
    "devices_per_node": "Accelerators (and training processes) per node (integer >= 1).",
    "expert_schedule": "A14B: parallel trains the high- and low-noise experts as two jobs at once (twice the nodes); "
                       "sequential trains one after the other on the same nodes.",
    "startup_timeout_s": "Seconds a cluster training job may take to get its pods running; a pod that cannot start "
                         "(Unschedulable, an image pull error, a volume that cannot be mounted) fails the step then, "
                         "with the cluster's message. Default 900.",
    "train_timeout_s": "Seconds the pretrain step waits for its cluster job in all before deleting it (default 7 days).",
    "active_deadline_s": "The training job's own activeDeadlineSeconds: the cluster stops it after this many seconds "
                         "even if nothing watches it; 0 for none.",
    "max_restarts": "How many times torchrun restarts the training ranks when one dies (a lost node, the OOM killer); "
                    "each restart resumes from the last checkpoint. 0: a dead rank ends the step.",
    "lora_format": "Layout of the exported LoRA file: diffusers (pytorch_lora_weights.safetensors, what "
                   "WanPipeline.load_lora_weights reads) or comfyui (original Wan names, lora_down / lora_up and "
                   "alpha, what ComfyUI's LoRA loaders read); the merge and comparison steps read either.",
    "image": "Container image of every task and of the training job's pods.",
    "pvc_name": "PersistentVolumeClaim mounted at /data in every task and training pod.",
    "namespace": "Namespace of the training job (empty: the submitting pod's).",
    "service_account": "Service account of the training job's pods (empty: the namespace's default).",
    "accelerator_resource": "Extended resource name requested for accelerators, e.g. huawei.com/Ascend910 or "
                            "nvidia.com/gpu; empty for none.",
    "node_selector": "Node selector of accelerator tasks and training pods, a JSON object of label: value.",
    "tolerations": "Tolerations of accelerator tasks and training pods, a JSON list of Kubernetes tolerations.",
    "volcano_queue": "Volcano queue of the training job (launcher volcano, or any job under Volcano).",
    "feature_cache": "Encode the validated dataset once (VAE latents, text embeddings) and train from that cache "
                     "instead of running the encoders on every step (a volume work folder only).",
    # sampling
    "sample_frames": "Frames of each sampled video (4n+1); 0 for the variant's default.",
    "sample_height": "Height of sampled videos in pixels; 0 for the variant's default.",
    "sample_width": "Width of sampled videos in pixels; 0 for the variant's default.",
    "sample_steps": "Denoising steps per video; 0 for the variant's default (50 for 5B, 40 for A14B).",
    "sample_devices": "Sampling processes, one accelerator each, in groups of sample_cp (x 2 with "
                      "sample_cfg_parallel) that each make one video; prompts are split across the groups.",
    "sample_cp": "Processes sharing each sampled video's sequence (context parallelism, wan22 sample --cp).",
    "sample_cp_algo": "Context-parallel algorithm for sampling: ulysses, ring or usp (or MindSpeed-MM's names).",
    "sample_ulysses_degree": "usp: Ulysses group size inside each sampling CP group; 0 when not usp.",
    "sample_cfg_parallel": "Run the conditional and unconditional passes of each video on two processes.",
    "sample_shard_weights": "FSDP2-shard the DiT and text encoder over each video's processes (needs sample_cp > 1 "
                            "or sample_cfg_parallel).",
    "sample_offload": "Where sampling weights wait between uses: none, model, sequential, or auto (the memory "
                      "plan's least offload that fits the device).",
    "lora_scale": "Multiplies each adapter's alpha / r when merging and sampling (1.0 = as trained; >= 0).",
    # wan22-sample
    "model": "Diffusers-format Wan2.2 pipeline folder to sample from.",
    "output": "Folder for NNNN.mp4, samples.json and preview.html.",
    "frames": "Frames of each video (4n+1); 0 for the variant's default.",
    "height": "Height in pixels; 0 for the variant's default.",
    "width": "Width in pixels; 0 for the variant's default.",
    "steps": "Denoising steps; 0 for the variant's default.",
    "guidance": "Guidance scale(s), space-separated: 'G' or 'G_high G_low' for A14B; empty for the variant's.",
    "seed": "Seed of the first prompt; prompt i uses seed + i (integer >= 0).",
    "devices": "Sampling processes, one accelerator each, in groups of cp (x 2 with cfg_parallel) that each make one "
               "video; prompts are split across the groups.",
    "cp": "Processes sharing each video's sequence (context parallelism, wan22 sample --cp).",
    "cp_algo": "Context-parallel algorithm: ulysses, ring or usp (or MindSpeed-MM's names).",
    "ulysses_degree": "usp: Ulysses group size inside each CP group; 0 when not usp.",
    "cfg_parallel": "Run the conditional and unconditional passes of each video on two processes.",
    "shard_weights": "FSDP2-shard the DiT and text encoder over each video's processes (needs cp > 1 or cfg_parallel).",
    "offload": "Where weights wait between uses: none, model, sequential, or auto (the memory plan's least offload "
               "that fits the device).",
    # wan22-convert
    "source": "Checkpoint to convert: a diffusers or official Wan folder (hf-to-mm), or an mm folder (mm-to-hf).",
    "target": "Output folder of the conversion.",
    "direction": "hf-to-mm or mm-to-hf.",
    "fmt": "hf-to-mm output: safetensors (streamed) or mm-pt (MindSpeed-MM's model_optim_rng.pt).",
    "hf_dir": "mm-to-hf: the original diffusers transformer folder whose config.json is copied (optional).",
    "layout": "mm-to-hf names: diffusers or official (what DiffSynth-Studio and ComfyUI load).",
}


def described(summary: str, pipeline_func):
    """`pipeline_func` with a docstring whose `Args:` describe every parameter (KFP puts them in the IR)."""
    names = list(inspect.signature(pipeline_func).parameters)
    missing = [n for n in names if n not in DESCRIPTIONS]
    if missing:
        raise ValueError(f"run parameters without a description in pipelines/parameters.py: {missing}")
    args = "\n".join(f"    {n}: {DESCRIPTIONS[n]}" for n in names)
    pipeline_func.__doc__ = f"{summary}\n\nArgs:\n{args}\n"
    return pipeline_func

