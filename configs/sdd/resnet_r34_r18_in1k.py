# SD-DKD (Wei et al., CVPR 2024), ResNet-34 -> ResNet-18, ImageNet-1k: DKD on the 1+4+16
# local logits of the last feature map. DKD alpha=1, beta=0.5, T=1, complementary regions x2,
# warm-up 1 epoch: the official configs/imagenet/r34_r18/sdd_dkd.yaml.
_base_ = ['../_base_/cls/resnet_r34_r18_in1k.py']
model = dict(distill_losses=dict(
    sdd=dict(type='SDDLoss', base='dkd', scales=(1, 2, 4), complementary_weight=2.0, alpha=1.0,
             beta=0.5, temperature=1.0, loss_weight=1.0)))
custom_hooks = [dict(type='mmkd.DistillLossScheduleHook', warmup=1, by_epoch=True)]
