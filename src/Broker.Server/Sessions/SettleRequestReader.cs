using Broker.Protocol.V1;
using Broker.Server.Grpc;
using Broker.Storage.Errors;
using Broker.Storage.Groups;
using Google.Protobuf.Collections;
using DeliveryRef = Broker.Storage.Groups.DeliveryRef;

namespace Broker.Server.Sessions;

/// <summary>One settle frame read off a Consume stream: what to do, or why the frame is refused whole.</summary>
/// <param name="RequestId">The frame's request_id, echoed in its answer.</param>
/// <param name="Action">What to do with the deliveries; null when the frame is refused.</param>
/// <param name="Deliveries">The deliveries the frame names (empty when refused).</param>
/// <param name="Refusal">Why the frame is refused (too many deliveries, a duration out of range); null when it is not.</param>
internal readonly record struct SettleFrame(ulong RequestId, SettleAction? Action, DeliveryRef[] Deliveries, string? Refusal);

/// <summary>
/// Turns one settle frame of a Consume stream (ack, nack, extend, release) into a storage <see cref="SettleAction"/>
/// and its deliveries, checking what the wire cannot: sizes, durations, and that the frame is a settle at all.
/// A settle frame with a bad value is refused whole, in its own answer (the proto's promise: the stream stays open and
/// the other deliveries the consumer holds are untouched). Only a request that is no settle at all (a second subscribe,
/// an empty request) ends the stream with INVALID_ARGUMENT: it has no request_id to answer.
/// </summary>
internal sealed class SettleRequestReader(int maxItemsPerFrame)
{
    private const int MaxReasonLength = 1024;
    private const int MaxLastErrorLength = 4096;

    public SettleFrame Read(ConsumeRequest request) => request.KindCase switch
    {
        ConsumeRequest.KindOneofCase.Ack => Frame(request.Ack.RequestId, request.Ack.Deliveries, new SettleAction.Ack(), null),
        ConsumeRequest.KindOneofCase.Nack => Frame(request.Nack.RequestId, request.Nack.Deliveries, NackAction(request.Nack, out string? nackProblem), nackProblem),
        ConsumeRequest.KindOneofCase.Extend => Frame(request.Extend.RequestId, request.Extend.Deliveries, ExtendAction(request.Extend, out string? extendProblem), extendProblem),
        ConsumeRequest.KindOneofCase.Release => Frame(request.Release.RequestId, request.Release.Deliveries, new SettleAction.Release(), null),
        ConsumeRequest.KindOneofCase.Subscribe =>
            throw BrokerStatus.InvalidRequest("this stream is subscribed already; open another stream for another subscription"),
        _ => throw BrokerStatus.InvalidRequest("a Consume request must carry subscribe, ack, nack, extend, release or stop"),
    };

    /// <summary>The answer to a refused frame: one failure without a delivery, meaning nothing of the frame took effect.</summary>
    public static Task<SettleResult> Refuse(string refusal) =>
        Task.FromException<SettleResult>(new BrokerException(BrokerErrorCode.InvalidRequest, refusal));

    private SettleFrame Frame(ulong requestId, RepeatedField<Protocol.V1.DeliveryRef> deliveries, SettleAction? action, string? problem)
    {
        if (deliveries.Count > maxItemsPerFrame)
            problem = $"a settle frame holds at most {maxItemsPerFrame} deliveries; this one has {deliveries.Count}";
        if (problem is not null)
            return new SettleFrame(requestId, null, [], problem);
        var result = new DeliveryRef[deliveries.Count];
        for (int i = 0; i < result.Length; i++)
            result[i] = new DeliveryRef((long)Math.Min(deliveries[i].Offset, long.MaxValue), deliveries[i].Token);
        return new SettleFrame(requestId, action, result, null);
    }

    private static SettleAction? NackAction(Nack nack, out string? problem)
    {
        string? lastError = nack.LastError.Length == 0 ? null : Cut(nack.LastError, MaxLastErrorLength);
        switch (nack.Action)
        {
            case Protocol.V1.NackAction.Retry:
                var delay = CheckedDuration(nack.DelayMs, "delay_ms", out problem);
                return new SettleAction.Retry(delay, lastError);
            case Protocol.V1.NackAction.DeadLetter:
                problem = null;
                string reason = nack.Reason.Length == 0 ? "dead-lettered by the consumer" : Cut(nack.Reason, MaxReasonLength);
                return new SettleAction.DeadLetter(reason, lastError);
            default:
                problem = $"unknown nack action {(int)nack.Action}";
                return null;
        }
    }

    private static SettleAction ExtendAction(Extend extend, out string? problem)
    {
        problem = null;
        return new SettleAction.Extend(extend.ExtendMs == 0 ? null : CheckedDuration(extend.ExtendMs, "extend_ms", out problem));
    }

    private static TimeSpan CheckedDuration(uint milliseconds, string field, out string? problem)
    {
        var duration = TimeSpan.FromMilliseconds(milliseconds);
        problem = duration > GroupPolicy.MaxVisibilityTimeout ? $"{field} must be at most 12 hours (43200000 ms); this frame has {milliseconds}" : null;
        return duration;
    }

    private static string Cut(string text, int maxLength) => text.Length <= maxLength ? text : text[..maxLength];
}
