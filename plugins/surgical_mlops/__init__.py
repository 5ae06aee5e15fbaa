"""Custom operators and sensors in the Amazon provider's style, for the SageMaker features the provider lacks."""
