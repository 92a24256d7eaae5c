using Broker.Storage.Groups;

namespace Broker.Storage.Tests;

public sealed class ConsumerGroupStateTests
{
    // Entries 100 bytes apart: offset n lives at address 1000 + 100n.
    private static MessageLocation At(long offset) => new(offset, 1000 + 100 * offset, 1000 + 100 * (offset + 1));

    [Fact]
    public void The_floor_moves_only_over_a_contiguous_run_of_acks()
    {
        var state = new ConsumerGroupState(0, At(0).Address, [], firstToken: 10);
        var delivered = Enumerable.Range(0, 4).Select(i => state.Deliver(At(i), consumerId: 1, previousAttempts: 0)).ToList();

        Assert.Equal(AckOutcome.Acknowledged, state.Acknowledge(1, delivered[1].Token, out _));
        Assert.Equal(AckOutcome.Acknowledged, state.Acknowledge(2, delivered[2].Token, out _));
        Assert.Equal(0, state.AckFloor);
        Assert.Equal(AckOutcome.Acknowledged, state.Acknowledge(0, delivered[0].Token, out _));
        Assert.Equal(3, state.AckFloor);
        Assert.Equal(At(3).Address, state.FloorAddress);
        Assert.Equal(1, state.InFlightCount);
        Assert.Equal(0, state.AcknowledgedAboveFloorCount);
    }

    [Fact]
    public void A_wrong_token_or_a_second_ack_is_stale_and_an_undelivered_offset_is_unknown()
    {
        var state = new ConsumerGroupState(0, At(0).Address, [], firstToken: 10);
        var message = state.Deliver(At(0), consumerId: 1, previousAttempts: 0);

        Assert.Equal(AckOutcome.Stale, state.Acknowledge(0, message.Token + 1, out _));
        Assert.Equal(AckOutcome.Acknowledged, state.Acknowledge(0, message.Token, out int consumer));
        Assert.Equal(1, consumer);
        Assert.Equal(AckOutcome.Stale, state.Acknowledge(0, message.Token, out _));
        Assert.Equal(AckOutcome.Unknown, state.Acknowledge(5, message.Token, out _));
    }

    [Fact]
    public void Releasing_a_consumer_makes_its_messages_visible_again_with_their_attempts()
    {
        var state = new ConsumerGroupState(0, At(0).Address, [], firstToken: 10);
        var first = state.Deliver(At(0), consumerId: 1, previousAttempts: 0);
        state.Deliver(At(1), consumerId: 2, previousAttempts: 0);
        state.Deliver(At(2), consumerId: 1, previousAttempts: 0);

        Assert.Equal(2, state.ReleaseConsumer(1));
        Assert.Equal(0, state.InFlightOf(1));
        Assert.Equal(1, state.InFlightOf(2));
        Assert.Equal(AckOutcome.Stale, state.Acknowledge(0, first.Token, out _));
        Assert.True(state.TryTakeVisibleAgain(out var location, out int attempts));
        Assert.Equal(0, location.Offset);
        Assert.Equal(1, attempts);
        var again = state.Deliver(location, consumerId: 3, previousAttempts: attempts);
        Assert.Equal(2, again.Attempt);
        Assert.NotEqual(first.Token, again.Token);
        Assert.True(state.TryTakeVisibleAgain(out location, out _));
        Assert.Equal(2, location.Offset);
        Assert.False(state.TryTakeVisibleAgain(out _, out _));
    }

    [Fact]
    public void After_a_restore_the_floor_waits_until_the_reader_has_seen_acknowledged_offsets()
    {
        // Restored: floor 0, offsets 1 and 2 acknowledged earlier, their addresses unknown until the reader passes.
        var state = new ConsumerGroupState(0, At(0).Address, [1, 2], firstToken: 10);
        Assert.True(state.IsAcknowledged(1));
        var zero = state.Deliver(At(0), consumerId: 1, previousAttempts: 0);
        Assert.Equal(AckOutcome.Acknowledged, state.Acknowledge(0, zero.Token, out _));
        Assert.Equal(1, state.AckFloor);

        state.NoteAcknowledgedLocation(1, At(1).NextAddress);
        state.NoteAcknowledgedLocation(2, At(2).NextAddress);
        Assert.Equal(3, state.AckFloor);
        Assert.Equal(At(3).Address, state.FloorAddress);
    }
}
