# DeiT-tiny with its distillation token (Touvron et al., ICML 2021), trained
# as the DeiT paper does: the class token's head on the labels (mmpretrain's
# label-smoothed CE, Mixup/CutMix), the distillation token's head on a
# convolutional teacher's hard decision, CE(z_dist, argmax z_t), each
# weighted 1/2 (DeiT's --distillation-type hard --distillation-alpha 0.5);
# prediction the average of the two heads' logits (mmpretrain's DeiTClsHead).
# The recipe is mmpretrain's deit-tiny-distilled_4xb256_in1k (300 epochs,
# AdamW, 4 GPUs x 256), which mmpretrain ships for evaluation only.
# Soft distillation (DeiT's --distillation-type soft, tau 1):
#   --cfg-options model.distill_losses.loss_deit.mode=soft
#
# Teacher: mmpretrain's RegNetX-12GF (79.67 top-1, its metafile.yml). The
# DeiT paper's teacher is a RegNetY-16GF (82.9), which mmpretrain does not
# ship; published DeiT-tiny distilled top-1: 74.5 (DeiT paper, Table 5;
# mmpretrain's converted checkpoint: 74.51).
#
# TEACHER CHECKPOINT: the model-zoo URL below; without network download it
# once and pass --cfg-options model.teacher_ckpt=/path/to/teacher.pth
_base_ = ['mmpretrain::deit/deit-tiny-distilled_4xb256_in1k.py']

custom_imports = dict(imports=['mmrankkd'], allow_failed_imports=False)

teacher_ckpt = 'https://download.openmmlab.com/mmclassification/v0/regnet/regnetx-12gf_8xb64_in1k_20211213-5df8c2f8.pth'  # noqa: E501

# mmpretrain's Mixup/CutMix (its model's train_cfg.augments) on the
# distiller's data preprocessor, which the teacher's input is mapped from.
data_preprocessor = dict(batch_augments=dict(augments=[
    dict(type='Mixup', alpha=0.8),
    dict(type='CutMix', alpha=1.0),
]))

model = dict(
    _delete_=True,
    type='mmrankkd.LogitDistiller',
    student=dict(
        type='mmpretrain.ImageClassifier',
        backbone=dict(
            type='mmpretrain.DistilledVisionTransformer',
            arch='deit-tiny',
            img_size=224,
            patch_size=16),
        neck=None,
        head=dict(
            type='mmpretrain.DeiTClsHead',
            num_classes=1000,
            in_channels=192,
            # DeiT: (1 - alpha) * base loss, alpha = 0.5
            loss=dict(
                type='mmpretrain.LabelSmoothLoss',
                label_smooth_val=0.1,
                mode='original',
                loss_weight=0.5),
        ),
        init_cfg=[
            dict(type='TruncNormal', layer='Linear', std=.02),
            dict(type='Constant', layer='LayerNorm', val=1., bias=0.),
        ]),
    teacher='mmpretrain::regnet/regnetx-12gf_8xb64_in1k.py',
    teacher_ckpt=teacher_ckpt,
    distill_losses=dict(
        loss_deit=dict(type='mmrankkd.DeiTDistillationLoss', mode='hard',
                       temperature=1.0, loss_weight=0.5)),
    student_task_loss=True)

val_cfg = dict(_delete_=True, type='mmrankkd.DistillValLoop',
               score_teacher=True)
test_cfg = dict(_delete_=True, type='mmrankkd.DistillTestLoop',
                score_teacher=True)
val_evaluator = [
    dict(type='Accuracy', topk=(1, 5)),
    dict(type='mmrankkd.TeacherStudentAgreement'),
]
test_evaluator = val_evaluator

# Random generator states in every checkpoint: --resume continues exactly.
custom_hooks = [dict(type='mmrankkd.ExactResumeHook'),
                dict(type='mmrankkd.ValueCheckHook')]
