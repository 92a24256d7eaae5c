using System.Text;
using Broker.Storage.Groups;
using Broker.Storage.Topics;

namespace Broker.Storage.Tests;

/// <summary>
/// In an ordered group an ack passes its key's turn before its record is appended; the key's next message must not
/// have its ack appended (and made durable) first, or a crash between the two commits would redeliver the earlier
/// message after the later one was done.
/// </summary>
public sealed class OrderedAckTests : IDisposable
{
    private readonly TempDirectory _data = new();

    public void Dispose() => _data.Dispose();

    [Fact]
    public async Task The_next_ack_of_a_key_cannot_reach_the_log_before_the_ack_that_passed_it_the_turn()
    {
        var options = new StorageOptions { DataDirectory = _data.Path, MaintenanceInterval = TimeSpan.FromDays(1) };
        await using var store = await TopicStore.OpenAsync(options, TimeProvider.System);
        await store.CreateTopicAsync("jobs", false, default);
        var topic = await store.GetTopicAsync("jobs");
        var (group, _) = await topic.GetOrCreateGroupAsync("g", GroupStart.Earliest, GroupPolicy.Default with { OrderedByKey = true }, default);
        await topic.AppendAsync([Keyed("k", "m1"), Keyed("k", "m2")]);
        var first = group.Join(10);
        var second = group.Join(10);
        var m1 = Assert.Single(await group.FetchAvailableAsync(first, 10, default));
        Assert.Equal("m1", Encoding.UTF8.GetString(m1.Message.Payload.Span));

        using var deadline = new CancellationTokenSource(TimeSpan.FromSeconds(30));
        Task<SettleResult>? secondAck = null;
        bool secondAckDurableFirst = false;
        group.AckAppliedBeforeAppend = () =>
        {
            group.AckAppliedBeforeAppend = null;
            // m1's turn has passed and its record is not appended yet (a preempted thread): another consumer takes m2
            // and acks it meanwhile.
            secondAck = Task.Run(async () =>
            {
                var m2 = Assert.Single(await group.FetchAsync(second, 10, deadline.Token));
                Assert.Equal("m2", Encoding.UTF8.GetString(m2.Message.Payload.Span));
                return await group.SettleAsync(new SettleAction.Ack(), [new DeliveryRef(m2.Offset, m2.Token)]);
            });
            // Blocking here on purpose, as long as the preemption lasts: appended out of order, m2's ack would be
            // durable within it while m1's is not written.
            secondAckDurableFirst = secondAck.Wait(TimeSpan.FromSeconds(2));
        };

        Assert.Equal(1, (await group.SettleAsync(new SettleAction.Ack(), [new DeliveryRef(m1.Offset, m1.Token)])).Accepted);
        Assert.False(secondAckDurableFirst, "m2's ack was durable before m1's ack record was appended");
        Assert.NotNull(secondAck);
        Assert.Equal(1, (await secondAck.WaitAsync(deadline.Token)).Accepted);
    }

    private static AppendMessage Keyed(string key, string payload) =>
        new(Encoding.UTF8.GetBytes(key), [], Encoding.UTF8.GetBytes(payload));
}
