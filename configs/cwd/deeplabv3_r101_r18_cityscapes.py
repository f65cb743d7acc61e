# Channel-wise distillation (Shu et al., ICCV 2021) of the decode-head logits: per class
# channel, a softmax over the pixels (ignored pixels excluded). tau=1, weight 5: the
# Cityscapes PSPNet setting of the official code (pppppM/mmsegmentation-distiller) and
# MMRazor (cwd_logits_pspnet_r101_d8_pspnet_r18_d8_512x1024_cityscapes_80k.py).
_base_ = ['../_base_/seg/deeplabv3_r101_r18_cityscapes.py']
model = dict(
    distill_losses=dict(cwd=dict(type='ChannelWiseDivergence', tau=1.0, loss_weight=5.0)))
