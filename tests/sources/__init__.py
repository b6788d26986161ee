"""Test oracles: independent torch re-implementations of third-party DCN layers.

Each module stands in for one source library. Class names, constructor signatures,
submodule and parameter names follow the real library (so ``state_dict`` keys match),
and ``forward`` reproduces the library's documented arithmetic. Nothing here imports
the real libraries or ``dcn_deploy``: the point is an independent oracle for
"source forward == converted canonical forward" tests.

Modules
-------
``_sampling``     shared vectorised bilinear im2col (rules ``"canonical"`` and ``"mxnet_v1"``)
``_tiled``        the p/q gather-and-tile machinery of the pure-PyTorch ports
``mmcv``          mmcv ``ModulatedDeformConv2d(Pack)``, ``DeformConv2d(Pack)``
``mmdet_v1``      mmdetection 1.x ``ModulatedDeformConv(Pack)``, ``DeformConv(Pack)``
``charlesshang``  CharlesShang/DCNv2 ``DCNv2``, ``DCN`` and CenterNet's ``DeformConv``
``chengdazhi``    chengdazhi/Deformable-Convolution-V2-PyTorch ``ModulatedDeformConv(Pack)``
``detectron2``    detectron2 ``DeformConv``, ``ModulatedDeformConv``, ``DeformBottleneckBlock``
``paddle``        Paddle ``DeformConv2D`` and PaddleDetection ``DeformableConvV2``
``uiiurz1``       4uiiurz1/pytorch-deform-conv-v2 ``DeformConv2d`` (+ ``DeformConv2dOld``)
``chunhuanlin``   ChunhuanLin/deform_conv_pytorch ``DeformConv2D``
``mxnet``         MSRA DCNv1, an MXNet DCNv2 example block, Gluon ``ModulatedDeformableConvolution``,
                  ``save_mxnet_params``
``keras_deform``  a torch stand-in for the Keras per-pixel ``ConvOffset2D``
``dcnv3``         InternImage ``DCNv3_pytorch`` and ``DCNv4`` (structure only)
"""
