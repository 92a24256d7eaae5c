using Broker.Protocol.V1;
using Broker.Server.Grpc;
using Broker.Storage.Groups;
using Google.Protobuf.Collections;
using DeliveryRef = Broker.Storage.Groups.DeliveryRef;

namespace Broker.Server.Sessions;

/// <summary>
/// Turns one settle frame of a Consume stream (ack, nack, extend, release) into a storage <see cref="SettleAction"/>
/// and its deliveries, checking what the wire cannot: sizes, durations, and that the frame is a settle at all.
/// A frame that breaks the protocol ends the stream with INVALID_ARGUMENT; a bad item inside a good frame does not.
/// </summary>
internal sealed class SettleRequestReader(int maxItemsPerFrame)
{
    private const int MaxReasonLength = 1024;
    private const int MaxLastErrorLength = 4096;

    public (ulong RequestId, SettleAction Action, DeliveryRef[] Deliveries) Read(ConsumeRequest request) => request.KindCase switch
    {
        ConsumeRequest.KindOneofCase.Ack => (request.Ack.RequestId, new SettleAction.Ack(), Deliveries(request.Ack.Deliveries)),
        ConsumeRequest.KindOneofCase.Nack => (request.Nack.RequestId, NackAction(request.Nack), Deliveries(request.Nack.Deliveries)),
        ConsumeRequest.KindOneofCase.Extend => (request.Extend.RequestId, ExtendAction(request.Extend), Deliveries(request.Extend.Deliveries)),
        ConsumeRequest.KindOneofCase.Release => (request.Release.RequestId, new SettleAction.Release(), Deliveries(request.Release.Deliveries)),
        ConsumeRequest.KindOneofCase.Subscribe =>
            throw BrokerStatus.InvalidRequest("this stream is subscribed already; open another stream for another subscription"),
        _ => throw BrokerStatus.InvalidRequest("a Consume request must carry subscribe, ack, nack, extend or release"),
    };

    private DeliveryRef[] Deliveries(RepeatedField<Protocol.V1.DeliveryRef> deliveries)
    {
        if (deliveries.Count > maxItemsPerFrame)
            throw BrokerStatus.InvalidRequest($"a settle frame holds at most {maxItemsPerFrame} deliveries; this one has {deliveries.Count}");
        var result = new DeliveryRef[deliveries.Count];
        for (int i = 0; i < result.Length; i++)
            result[i] = new DeliveryRef((long)Math.Min(deliveries[i].Offset, long.MaxValue), deliveries[i].Token);
        return result;
    }

    private static SettleAction NackAction(Nack nack)
    {
        string? lastError = nack.LastError.Length == 0 ? null : Cut(nack.LastError, MaxLastErrorLength);
        switch (nack.Action)
        {
            case Protocol.V1.NackAction.Retry:
                return new SettleAction.Retry(CheckedDuration(nack.DelayMs, "delay_ms"), lastError);
            case Protocol.V1.NackAction.DeadLetter:
                string reason = nack.Reason.Length == 0 ? "dead-lettered by the consumer" : Cut(nack.Reason, MaxReasonLength);
                return new SettleAction.DeadLetter(reason, lastError);
            default:
                throw BrokerStatus.InvalidRequest($"unknown nack action {nack.Action}");
        }
    }

    private static SettleAction ExtendAction(Extend extend) =>
        new SettleAction.Extend(extend.ExtendMs == 0 ? null : CheckedDuration(extend.ExtendMs, "extend_ms"));

    private static TimeSpan CheckedDuration(uint milliseconds, string field)
    {
        var duration = TimeSpan.FromMilliseconds(milliseconds);
        if (duration > GroupPolicy.MaxVisibilityTimeout)
            throw BrokerStatus.InvalidRequest($"{field} must be at most 12 hours");
        return duration;
    }

    private static string Cut(string text, int maxLength) => text.Length <= maxLength ? text : text[..maxLength];
}
