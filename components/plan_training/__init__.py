from components.plan_training.component import plan_training

__all__ = ["plan_training"]
