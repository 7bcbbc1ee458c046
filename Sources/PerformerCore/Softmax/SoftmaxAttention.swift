import PerformerKernelInterface

/// Exact softmax attention, O = softmax(s · Q Kᵀ + mask) V, forward and backward
/// (ALGORITHMS.md §1), tiled so that no N × L matrix is ever stored.
///
/// Shapes: q B×H×N×D, k B×Hk×L×D, v B×Hk×L×M, out B×H×N×M, lse B×H×N×1; Hk divides H and
/// query head h reads key head h / (H/Hk). Views may have any strides. Every argument is
/// checked before any output is written; on error nothing is written.
public enum SoftmaxAttention {
    /// Writes the attention output into `output` and, when given, the row log-sum-exp of the
    /// scaled scores into `logSumExp` (−inf for a row that sees no key; its output row is 0).
    // Specialized entry points: the C ABI calls these with Float and Double, and the generic
    // body looks up type metadata at run time (a tenth of a tiny call's time).
    @_specialize(exported: true, where T == Float)
    @_specialize(exported: true, where T == Double)
    public static func forward<T: AttentionScalar>(
        query: TensorView<T>, key: TensorView<T>, value: TensorView<T>,
        output: MutableTensorView<T>, logSumExp: MutableTensorView<T>? = nil,
        options: SoftmaxAttentionOptions = SoftmaxAttentionOptions()
    ) throws(PerformerError) {
        let problem = try checkForward(query: query, key: key, value: value, output: output, logSumExp: logSumExp,
                                       options: options)

        let kernels = Runtime.kernels.softmax
        let shape = problem.shape
        let rowBlock = kernels.forwardRowBlock
        let blocksPerHead = (shape.queryCount + rowBlock - 1) / rowBlock
        let taskCount = problem.batch * problem.heads * blocksPerHead
        guard taskCount > 0, shape.valueDim > 0 || logSumExp != nil else { return }
        if shape.queryCount <= rowPathMaxQueries {
            try forwardRows(problem, query: query, key: key, value: value, output: output, logSumExp: logSumExp)
            return
        }
        let threads = min(Runtime.threads(forWork: problem.work), taskCount)
        let scratch = try ScratchBuffer(slots: threads, slotBytes: kernels.forwardScratchBytes(shape, MemoryLayout<T>.stride),
                                        for: problem.argumentSizes)
        let entry = T.dtype == .float32 ? kernels.forwardFloat : kernels.forwardDouble
        let group = problem.heads / problem.keyHeads

        Runtime.parallelFor(count: taskCount, threads: threads) { item, worker in
            // Last blocks first: under a causal mask they see the most keys.
            let block = blocksPerHead - 1 - item % blocksPerHead
            let head = item / blocksPerHead
            let (b, h) = (head / problem.heads, head % problem.heads)
            let rowStart = block * rowBlock
            let window = problem.keyWindow(batch: b)
            var task = SoftmaxForwardTask(
                shape: window.shape, masking: window.masking, scale: problem.scale,
                rowStart: rowStart, rowCount: min(rowBlock, shape.queryCount - rowStart),
                query: query.matrix(b, h), key: key.matrix(b, h / group, firstRow: window.offset),
                value: value.matrix(b, h / group, firstRow: window.offset),
                output: output.matrix(b, h),
                logSumExp: logSumExp.map { UnsafeMutableRawPointer($0.base + b * $0.strides[0] + h * $0.strides[1]) },
                logSumExpStride: logSumExp?.strides[2] ?? 0, scratch: scratch.slot(worker))
            entry(&task)
        }
    }

    /// Writes the gradients of the loss with respect to q, k and v, given the forward's
    /// `output` and `logSumExp` and the gradient `outputGradient` of the loss with respect to
    /// the output. Recomputes P from `logSumExp`; stores no N × L matrix.
    // Specialized for Float and Double (see forward).
    @_specialize(exported: true, where T == Float)
    @_specialize(exported: true, where T == Double)
    public static func backward<T: AttentionScalar>(
        query: TensorView<T>, key: TensorView<T>, value: TensorView<T>,
        output: TensorView<T>, logSumExp: TensorView<T>, outputGradient: TensorView<T>,
        queryGradient: MutableTensorView<T>, keyGradient: MutableTensorView<T>, valueGradient: MutableTensorView<T>,
        options: SoftmaxAttentionOptions = SoftmaxAttentionOptions()
    ) throws(PerformerError) {
        let problem = try checkBackward(query: query, key: key, value: value, output: output, logSumExp: logSumExp,
                                        outputGradient: outputGradient, queryGradient: queryGradient, keyGradient: keyGradient,
                                        valueGradient: valueGradient, options: options)

        let kernels = Runtime.kernels.softmaxBackward
        let shape = problem.shape
        let group = problem.heads / problem.keyHeads
        let (n, l) = (shape.queryCount, shape.keyCount)
        let keyHeadCount = problem.batch * problem.keyHeads
        // With no query head (H = 0) or no query (N = 0) the key tasks still run: they write
        // zero dK, dV.
        guard problem.batch * (problem.heads * n + problem.keyHeads * l) > 0 else { return }
        // Three layouts, which give the same bits (so the thread count never changes a result):
        // - fused: one task per key head writes its dK, dV and the dQ of its query heads (five
        //   products per block pair), when the key heads spread evenly over the threads;
        // - per query head, for grouped heads (GQA, MQA) that do not: one fused task per query
        //   head; the group's first head writes dk, dv, the others their own dK, dV into
        //   `partials`, added to dk, dv in head order afterwards — the order in which a fused
        //   task adds each head's dK, dV to the group's total;
        // - split, for single heads that do not: a key pass and a query pass (seven products,
        //   finer tasks).
        let threadsWanted = Runtime.threads(forWork: Runtime.work(problem.work, 3))
        let balanced = keyHeadCount % threadsWanted == 0 || keyHeadCount >= 4 * threadsWanted
        let perQueryHead = !balanced && group > 1 && l > 0
        let fused = balanced || perQueryHead
        let keyRowBlock = fused ? max(l, 1) : kernels.keyRowBlock
        let keyBlocks = l == 0 ? 0 : (l + keyRowBlock - 1) / keyRowBlock
        let queryBlocks = fused ? 0 : (n + kernels.queryRowBlock - 1) / kernels.queryRowBlock
        let keyTasks = (perQueryHead ? problem.batch * problem.heads : keyHeadCount) * keyBlocks
        let queryTasks = problem.batch * problem.heads * queryBlocks
        let elementSize = MemoryLayout<T>.stride
        let threads = max(1, min(threadsWanted, queryTasks + keyTasks))
        let scratch = try ScratchBuffer(
            slots: threads, slotBytes: kernels.scratchBytes(shape, elementSize, min(keyRowBlock, l), fused),
            for: problem.argumentSizes)
        // dK, dV of query heads g = 1 ..< group of every key head (per-query-head layout only).
        let (d, m) = (shape.headDim, shape.valueDim)
        let partialHeads = perQueryHead ? (group - 1) * keyHeadCount : 0
        let partials = try ScratchBuffer(slots: 1, slotBytes: ScratchSize(partialHeads) * l * (ScratchSize(d) + m) * elementSize,
                                         for: problem.argumentSizes)
        func partialGradients(_ b: Int, _ hk: Int, _ g: Int) -> (key: StridedMatrix, value: StridedMatrix) {
            let base = partials.base + ((g - 1) * keyHeadCount + b * problem.keyHeads + hk) * l * (d + m) * elementSize
            return (StridedMatrix(base: base, rowStride: d, columnStride: 1),
                    StridedMatrix(base: base + l * d * elementSize, rowStride: m, columnStride: 1))
        }
        // δ_i = Σ_m dO_im O_im for every query row (O(N) per head), before the passes.
        let deltas = try ScratchBuffer(slots: 1, slotBytes: ScratchSize(problem.batch) * problem.heads * n * elementSize,
                                       for: problem.argumentSizes)
        let delta = deltas.base.assumingMemoryBound(to: T.self)
        let deltaEntry = T.dtype == .float32 ? kernels.deltaFloat : kernels.deltaDouble
        // Its own estimate (2·B·H·N·M operations): at N = 512, D = 32 it is ~20 µs of work, run
        // inline rather than as a parallel region of its own (a region costs more than that on a
        // loaded host or on a host's pool).
        let deltaThreads = Runtime.threads(forWork: Runtime.work(problem.batch, problem.heads, n, shape.valueDim, 2))
        Runtime.parallelFor(count: problem.batch * problem.heads, threads: min(deltaThreads, problem.batch * problem.heads)) { head, _ in
            let (b, h) = (head / problem.heads, head % problem.heads)
            deltaEntry(output.matrix(b, h), outputGradient.matrix(b, h), n, shape.valueDim,
                       UnsafeMutableRawPointer(delta + head * n))
        }
        let isFloat = T.dtype == .float32
        let queryEntry = isFloat ? kernels.queryFloat : kernels.queryDouble
        let keyEntry = isFloat ? kernels.keyFloat : kernels.keyDouble

        // Key-pass tasks first (each sums over a whole head group), then query-pass tasks;
        // the last blocks of each head first (under a causal mask they do the most work).
        Runtime.parallelFor(count: queryTasks + keyTasks, threads: threads) { item, worker in
            let isKeyTask = item < keyTasks
            let blocks = isKeyTask ? keyBlocks : queryBlocks
            let rowBlock = isKeyTask ? keyRowBlock : kernels.queryRowBlock
            let local = isKeyTask ? item : item - keyTasks
            let block = isKeyTask ? local % blocks : blocks - 1 - local % blocks
            let headIndex = local / blocks
            let byKeyHead = isKeyTask && !perQueryHead
            let headsPerBatch = byKeyHead ? problem.keyHeads : problem.heads
            let b = headIndex / headsPerBatch
            // The first query head of the task: its own head (query pass, per-query-head key
            // task) or the group's first.
            let h = byKeyHead ? (headIndex % headsPerBatch) * group : headIndex % headsPerBatch
            // Not h / group: with zero query heads (H = 0) group is 0, and the key pass must still
            // write zero dk, dv (groupSize 0) instead of dividing by zero.
            let hk = byKeyHead ? headIndex % headsPerBatch : h / group

            let rowStart = block * rowBlock
            let window = problem.keyWindow(batch: b)
            let rows = isKeyTask ? window.shape.keyCount : n
            // The window is shorter by the cut-off left padding: key blocks past its end have no work.
            guard rowStart < rows else { return }
            let offset = window.offset
            let (ownKeyGradient, ownValueGradient) = perQueryHead && h % group > 0
                ? partialGradients(b, hk, h % group) : (keyGradient.matrix(b, hk), valueGradient.matrix(b, hk))
            var task = SoftmaxBackwardTask(
                shape: window.shape, masking: window.masking, scale: problem.scale,
                rowStart: rowStart, rowCount: min(rowBlock, rows - rowStart),
                query: query.matrix(b, h), key: key.matrix(b, hk, firstRow: offset),
                value: value.matrix(b, hk, firstRow: offset),
                outputGradient: outputGradient.matrix(b, h),
                logSumExp: UnsafeMutableRawPointer(mutating: logSumExp.base + b * logSumExp.strides[0] + h * logSumExp.strides[1]),
                logSumExpStride: logSumExp.strides[2],
                delta: UnsafeMutableRawPointer(delta + (b * problem.heads + h) * n),
                queryGradient: queryGradient.matrix(b, h), keyGradient: ownKeyGradient.firstRow(offset, T.self),
                valueGradient: ownValueGradient.firstRow(offset, T.self),
                groupSize: byKeyHead ? group : 1, queryHeadStep: query.strides[1],
                outputGradientHeadStep: outputGradient.strides[1], logSumExpHeadStep: logSumExp.strides[1],
                deltaHeadStep: n, queryGradientHeadStep: queryGradient.strides[1],
                fusedQueryGradient: isKeyTask && fused, scratch: scratch.slot(worker))
            (isKeyTask ? keyEntry : queryEntry)(&task)
        }
        if perQueryHead {
            // dk += dK of heads 1 ..< group, in head order, in blocks of key rows.
            let rowBlock = 256, rowBlocks = (l + rowBlock - 1) / rowBlock
            Runtime.parallelFor(count: keyHeadCount * rowBlocks, threads: threads) { item, _ in
                let (b, hk) = (item / rowBlocks / problem.keyHeads, item / rowBlocks % problem.keyHeads)
                // Partial rows before the batch row's key window were never written.
                let first = max(item % rowBlocks * rowBlock, problem.keyWindow(batch: b).offset)
                let end = min(l, (item % rowBlocks + 1) * rowBlock)
                guard first < end else { return }
                let rows = first..<end
                for g in 1..<group {
                    let partial = partialGradients(b, hk, g)
                    addRows(partial.key, into: keyGradient.matrix(b, hk), rows: rows, columns: d, as: T.self)
                    addRows(partial.value, into: valueGradient.matrix(b, hk), rows: rows, columns: m, as: T.self)
                }
            }
        }
        // Keys cut off by kv_starts (before each batch row's key window) get zero dK, dV.
        if problem.keyStarts != nil {
            for b in 0..<problem.batch {
                let cut = 0..<problem.keyWindow(batch: b).offset
                for hk in 0..<problem.keyHeads {
                    keyGradient.zeroRows(b, hk, cut)
                    valueGradient.zeroRows(b, hk, cut)
                }
            }
        }
        // Without keys no task wrote dQ: it is zero (every row is fully masked).
        if l == 0 {
            for b in 0..<problem.batch {
                for h in 0..<problem.heads {
                    let base = queryGradient.base + b * queryGradient.strides[0] + h * queryGradient.strides[1]
                    for i in 0..<n { for c in 0..<shape.headDim { base[i * queryGradient.strides[2] + c * queryGradient.strides[3]] = 0 } }
                }
            }
        }
    }
}

/// target += source over `rows` × `columns` elements of T (source rows contiguous).
private func addRows<T: AttentionScalar>(_ source: StridedMatrix, into target: StridedMatrix, rows: Range<Int>,
                                         columns: Int, as _: T.Type) {
    let from = source.base.assumingMemoryBound(to: T.self), to = target.base.assumingMemoryBound(to: T.self)
    for i in rows {
        let x = from + i * source.rowStride, y = to + i * target.rowStride
        if target.columnStride == 1 {
            for c in 0..<columns { y[c] += x[c] }
        } else {
            for c in 0..<columns { y[c * target.columnStride] += x[c] }
        }
    }
}

extension SoftmaxAttention {
    /// The problem of `forward`, every argument checked: generic over the token type T and the
    /// lse type L (a half-precision call keeps its lse in float32), so the float32 and half
    /// entries check alike.
    @discardableResult
    static func checkForward<T, L>(
        query: TensorView<T>, key: TensorView<T>, value: TensorView<T>, output: MutableTensorView<T>,
        logSumExp: MutableTensorView<L>?, options: SoftmaxAttentionOptions
    ) throws(PerformerError) -> SoftmaxProblem {
        let problem = try SoftmaxProblem(query: query, key: key, value: value, options: options)
        var footprints = try AttentionArguments.forward(query: query, key: key, value: value, output: output,
                                                        outputShape: problem.outputShape)
        if let logSumExp {
            try ShapeCheck.expectShape(logSumExp.readOnly, problem.logSumExpShape, name: "lse", meaning: "B×H×N×1")
            footprints.append(try TensorFootprint(logSumExp, name: "lse"))
        }
        try TensorFootprint.checkOutputsDisjoint(footprints)
        return problem
    }

    /// The problem of `backward`, every argument checked (T, L as in `checkForward`).
    @discardableResult
    static func checkBackward<T, L>(
        query: TensorView<T>, key: TensorView<T>, value: TensorView<T>, output: TensorView<T>,
        logSumExp: TensorView<L>, outputGradient: TensorView<T>, queryGradient: MutableTensorView<T>,
        keyGradient: MutableTensorView<T>, valueGradient: MutableTensorView<T>, options: SoftmaxAttentionOptions
    ) throws(PerformerError) -> SoftmaxProblem {
        let problem = try SoftmaxProblem(query: query, key: key, value: value, options: options)
        try TensorFootprint.checkOutputsDisjoint(try AttentionArguments.backward(
            query: query, key: key, value: value, output: output, logSumExp: logSumExp, outputGradient: outputGradient,
            queryGradient: queryGradient, keyGradient: keyGradient, valueGradient: valueGradient,
            outputShape: problem.outputShape, logSumExpShape: problem.logSumExpShape))
        return problem
    }
}
