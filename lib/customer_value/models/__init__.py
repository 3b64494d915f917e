"""The product's model: feature spec, ZILN spend + churn network, Horovod training, artifact and registry."""
